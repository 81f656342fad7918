"""Embedded default for `make run`: SQLite, blobs in ./var, DEBUG on, and Celery's broker in a
folder under ./var, which the web server, the worker and beat (`manage.py run_local`) share."""

import secrets
from pathlib import Path

from .base import *  # noqa: F403
from .base import (
    BROKER_NAMED,
    CELERY_BROKER_TRANSPORT_OPTIONS,
    CELERY_BROKER_URL,
    FOLDER_BROKER_URL,
    FOLDER_TRANSPORT_OPTIONS,
    SECRET_KEY,
    VAR_DIR,
    env,
)

DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
ANALEMMA_EMBEDDED = True
# A demo environment with flags, a running plan and recorded executions, made on first start.
ANALEMMA_DEMO = env.bool("ANALEMMA_DEMO", default=True)

VAR_DIR.mkdir(parents=True, exist_ok=True)
if not SECRET_KEY:
    # A random key kept under var/, so sessions survive restarts; never committed.
    _key_file = VAR_DIR / ".secret_key"
    if not _key_file.exists():
        _key_file.write_text(secrets.token_urlsafe(50))
        _key_file.chmod(0o600)
    SECRET_KEY = _key_file.read_text().strip()

if not BROKER_NAMED:
    # No server to run: messages go through a folder to `make run`'s worker and beat.
    CELERY_BROKER_URL = FOLDER_BROKER_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {**CELERY_BROKER_TRANSPORT_OPTIONS, **FOLDER_TRANSPORT_OPTIONS}
    CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu writes messages into these folders but does not make them.
    for _option in ("data_folder_in", "control_folder"):
        Path(str(CELERY_BROKER_TRANSPORT_OPTIONS[_option])).mkdir(parents=True, exist_ok=True)
