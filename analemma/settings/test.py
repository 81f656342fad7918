"""Tests: database from ANALEMMA_TEST_DATABASE_URL (the test runner starts PostgreSQL),
a fast hasher, a locmem cache, tasks eager."""

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = "test-only-not-secret"  # noqa: S105 - test settings, never deployed
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
ANALEMMA_EMBEDDED = True

DATABASES = {
    "default": env.dj_db_url("ANALEMMA_TEST_DATABASE_URL", default="sqlite:///:memory:"),
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CELERY_TASK_ALWAYS_EAGER = True
CELERY_BROKER_URL = "memory://"
LOGGING = {"version": 1, "disable_existing_loggers": False}
