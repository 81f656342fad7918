"""Embedded default for `make run`: SQLite, blobs in ./var, tasks in process, DEBUG on."""

import secrets

from .base import *  # noqa: F403
from .base import SECRET_KEY, VAR_DIR, env

DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
ANALEMMA_EMBEDDED = True

VAR_DIR.mkdir(parents=True, exist_ok=True)
if not SECRET_KEY:
    # A random key kept under var/, so sessions survive restarts; never committed.
    _key_file = VAR_DIR / ".secret_key"
    if not _key_file.exists():
        _key_file.write_text(secrets.token_urlsafe(50))
        _key_file.chmod(0o600)
    SECRET_KEY = _key_file.read_text().strip()
