"""Health endpoints.

* ``/livez``: the process answers. No I/O at all, so a slow database never gets a healthy web
  process restarted.
* ``/readyz``: the process can serve: the database answers and every migration is applied. An
  orchestrator sends traffic only to a ready process. The broker and the store are not part of
  it: the flag-set endpoint serves without them, so their outage must not take every web
  process out of rotation.
* ``/healthz``: the database, the store (the configured blob storage) and the broker, each
  answering within ``HEALTH_CHECK_TIMEOUT_SECONDS``. 200 when all answer, 503 otherwise; the
  body names each check and what failed.

The checks run side by side on a small pool of threads and are waited for at most the timeout
together, so a hung broker or store answers 503 within about one timeout. A check still running
from an earlier request is waited for rather than started again, so a hung dependency ties up one
thread however often the endpoint is called, and the other checks keep answering.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from django.conf import settings
from django.core.files.storage import FileSystemStorage, storages
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse

Check = Callable[[], str]

_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health")
_inflight: dict[tuple[str, str], Future[str]] = {}  # (check, its settings) -> its latest run
_inflight_lock = threading.Lock()
_migrated = threading.Event()  # set once every migration was seen applied: none goes away
_CREDENTIALS = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def livez(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _timeout() -> float:
    return float(getattr(settings, "HEALTH_CHECK_TIMEOUT_SECONDS", 2.0))


def _in_thread(check: Check) -> Callable[[], str]:
    """A check that closes the thread's database connection afterwards (threads of the pool
    are not request threads, which Django cleans up after)."""

    def run() -> str:
        try:
            return check()
        finally:
            connections.close_all()

    return run


def check_database() -> str:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def check_migrations() -> str:
    if _migrated.is_set():
        return "ok"
    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _ in pending[:5])
        raise RuntimeError(f"{len(pending)} not applied: {names}{', ...' if len(pending) > 5 else ''}")
    _migrated.set()
    return "ok"


def check_store() -> str:
    """The statebag storage can be reached: a local folder that is (or can be made) a writable
    folder; an S3 bucket that answers HEAD (s3:ListBucket, which docker-compose's policy grants);
    any other storage answers whether an object exists."""
    storage = storages["statebag"]
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # pragma: no cover - django-storages is a requirement
        S3Storage = None
    if S3Storage is not None and isinstance(storage, S3Storage):
        storage.connection.meta.client.head_bucket(Bucket=storage.bucket_name)
        return "ok"
    if isinstance(storage, FileSystemStorage):
        root = os.path.abspath(storage.location)
        existing = root
        while not os.path.isdir(existing):  # the first write makes a missing folder
            if os.path.lexists(existing) or os.path.dirname(existing) == existing:
                raise NotADirectoryError(f"{existing} is not a folder")
            existing = os.path.dirname(existing)
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"{existing} is not writable")
        return "ok"
    storage.exists("healthz-probe")  # raises on refused credentials or an unreachable store
    return "ok"


def check_broker() -> str:
    """A new connection to the configured broker (not the app's pool, so what is checked is what
    the settings say now), with socket timeouts within the check's own."""
    from kombu import Connection

    url = str(settings.CELERY_BROKER_URL)
    options: dict[str, Any] = dict(getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}))
    timeout = _timeout()
    if url.startswith("filesystem://"):
        for option in ("data_folder_in", "data_folder_out", "control_folder"):
            folder = str(options.get(option, ""))
            if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
                raise FileNotFoundError(f"broker folder {folder} is missing or not writable")
    if url.startswith(("redis://", "rediss://")):
        options.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    with Connection(url, connect_timeout=timeout, transport_options=options) as connection:
        connection.ensure_connection(max_retries=0, timeout=math.ceil(timeout))  # one attempt
        client = getattr(connection.default_channel, "client", None)
        ping = getattr(client, "ping", None)
        if callable(ping):  # Redis: the server answers commands, not just connections
            ping()
    return "eager (tasks run in the request)" if settings.CELERY_TASK_ALWAYS_EAGER else "ok"


def _describe(exc: BaseException) -> str:
    text = _CREDENTIALS.sub(r"\1***@", f"{type(exc).__name__}: {exc}")
    return text[:300]


def _checked_config(name: str) -> str:
    """What a check reads from the settings: a run in flight answers for the same settings only."""
    if name == "store":
        return repr(settings.STORAGES.get("statebag"))
    if name == "broker":
        return repr((settings.CELERY_BROKER_URL, getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})))
    return repr(settings.DATABASES.get(DEFAULT_DB_ALIAS))


def _started(name: str, check: Check) -> Future[str]:
    """The check running now: a new run, or the one still in flight from an earlier request,
    so a hung dependency holds one thread of the pool, not one per request."""
    key = (name, _checked_config(name))
    with _inflight_lock:
        running = _inflight.get(key)
        if running is None or running.done():
            for stale in [k for k, future in _inflight.items() if future.done()]:
                del _inflight[stale]
            running = _inflight[key] = _pool.submit(_in_thread(check))
        return running


def run_checks(checks: dict[str, Check]) -> tuple[bool, dict[str, dict[str, str]]]:
    """Every check's outcome, all of them waited for at most the timeout together."""
    timeout = _timeout()
    deadline = time.monotonic() + timeout
    futures = {name: _started(name, check) for name, check in checks.items()}
    results: dict[str, dict[str, str]] = {}
    for name, future in futures.items():
        try:
            detail = future.result(timeout=max(0.0, deadline - time.monotonic()))
            results[name] = {"status": "ok", "detail": detail}
        except FutureTimeout:
            results[name] = {"status": "failed", "detail": f"no answer within {timeout:g} s"}
        except Exception as exc:
            results[name] = {"status": "failed", "detail": _describe(exc)}
    return all(result["status"] == "ok" for result in results.values()), results


def _answer(checks: dict[str, Check], good: str) -> JsonResponse:
    ok, results = run_checks(checks)
    failed = [name for name, result in results.items() if result["status"] != "ok"]
    body = {"status": good if ok else "failed", "failed": failed, "checks": results}
    return JsonResponse(body, status=200 if ok else 503)


def healthz(request: HttpRequest) -> JsonResponse:
    return _answer({"database": check_database, "store": check_store, "broker": check_broker}, "ok")


def readyz(request: HttpRequest) -> JsonResponse:
    return _answer({"database": check_database, "migrations": check_migrations}, "ready")
