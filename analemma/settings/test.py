"""Tests: database from ANALEMMA_TEST_DATABASE_URL (the test runner starts PostgreSQL),
a fast hasher, a locmem cache, tasks eager."""

from .base import *  # noqa: F403
from .base import env, tune_sqlite

SECRET_KEY = "test-only-not-secret"  # test settings, never deployed
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
ANALEMMA_EMBEDDED = True

DATABASES = {
    "default": tune_sqlite(env.dj_db_url("ANALEMMA_TEST_DATABASE_URL", default="sqlite:///:memory:")),
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CACHE_SHARED = False
KEY_CACHE_SECONDS = 1
# Eager unless a test starts a real worker and broker (the worker-kill test does).
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://")
STORAGES = {**STORAGES}  # noqa: F405
STORAGES["statebag"] = {
    "BACKEND": "django.core.files.storage.FileSystemStorage",
    "OPTIONS": {"location": env.str("STATEBAG_LOCAL_ROOT", default="/tmp/analemma-test-blobs")},
}
LOGGING = {"version": 1, "disable_existing_loggers": False}

# Tests look at every change at once; the fast path's per-process memo would hide them for 1 s.
ROLLOUT_FASTPATH_MEMO_SECONDS = 0.0

# Tests name the guards they exercise (tests/telemetry/test_guard*.py: the built-in one).
ROLLOUT_GUARDS = []
