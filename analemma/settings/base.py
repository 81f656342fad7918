"""Settings shared by every environment. Everything comes from environment variables with
the usual names; the defaults are the embedded ones (SQLite, a local folder, no server)."""

from pathlib import Path
from typing import Any

import django_stubs_ext
from environs import Env

django_stubs_ext.monkeypatch()  # generic admin and queryset classes, as the type checker sees them
env = Env()

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env.str("ANALEMMA_VAR_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")  # local.py makes one; production.py requires it
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=[])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "audit",
    "keys",
    "statebag",
    "rollout",
    "telemetry",
    "analemma",  # the project package as an app: its commands (run_local, seed_demo)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.api.JsonErrorsMiddleware",
]

ROOT_URLCONF = "analemma.urls"
# Variables marked sensitive (keys) are hidden from error reports even with DEBUG on.
DEFAULT_EXCEPTION_REPORTER_FILTER = "core.debug.SecretsHiddenFilter"
WSGI_APPLICATION = "analemma.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "analemma" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.dj_db_url(
        "DATABASE_URL",
        default=f"sqlite:///{VAR_DIR / 'analemma.sqlite3'}",
        conn_max_age=env.int("DB_CONN_MAX_AGE", default=0),
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def tune_sqlite(database: dict[str, Any]) -> dict[str, Any]:
    """SQLite serialises writers: wait for the lock instead of failing, take it at the start
    of a transaction (no deadlocking upgrades), and let readers run beside the writer (WAL).
    The wait ends before a client's (the SDK's default timeout is 10 s), so a request that
    cannot get the lock is answered 503 rather than abandoned; bounded requests hold the lock
    for milliseconds (see STATEBAG_API_LIMITS)."""
    if database.get("ENGINE") == "django.db.backends.sqlite3":
        options = database.setdefault("OPTIONS", {})
        options.setdefault("timeout", env.float("SQLITE_BUSY_TIMEOUT", default=5.0))
        options.setdefault("transaction_mode", "IMMEDIATE")
        if database.get("NAME") not in (None, "", ":memory:"):
            options.setdefault("init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
    return database


tune_sqlite(DATABASES["default"])

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))

REDIS_URL = env.str("REDIS_URL", default="")
# The flag-set documents and SDK key lookups live here: Redis when distributed (shared by
# every web process), process memory in the embedded default.
CACHES = {
    "default": (
        {"BACKEND": "analemma.cache.ReusedClientRedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "analemma"}
    )
}

# Whether every process sees the same cache (Redis), or each its own memory. Either way a
# committed change reaches every server process within a second: Redis is written on commit;
# a process caching in its own memory asks the database, at most every
# CACHE_LOCAL_CHECK_SECONDS, whether a flag set changed, and trusts a key that long.
CACHE_SHARED = bool(REDIS_URL)
CACHE_LOCAL_CHECK_SECONDS = env.float("CACHE_LOCAL_CHECK_SECONDS", default=0.5)
# How long a resolved API key is trusted before the database is asked again. With a shared
# cache a revocation overwrites the entry everywhere at once.
KEY_CACHE_SECONDS = env.float("KEY_CACHE_SECONDS", default=300 if CACHE_SHARED else CACHE_LOCAL_CHECK_SECONDS)
# /healthz and /readyz wait at most this long for their checks (database, store, broker).
HEALTH_CHECK_TIMEOUT_SECONDS = env.float("HEALTH_CHECK_TIMEOUT_SECONDS", default=2.0)
# JSON request bodies nest at most this deep (the API answers 400 beyond).
API_MAX_JSON_DEPTH = env.int("API_MAX_JSON_DEPTH", default=200)
# Request bodies are at most this many bytes (413 beyond); the upload endpoint has its own limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=2 * 1024 * 1024)
# What one statebag API request may declare (400 beyond). At these values a request's database
# transaction stays within 100 ms (bench/api_limits.py), so one client cannot lock the others
# out; they are well above what the SDK sends for one dehydration.
STATEBAG_API_LIMITS = {
    "PACKS": env.int("STATEBAG_API_MAX_PACKS", default=64),  # objects declared by a prepare
    "FRAMES": env.int("STATEBAG_API_MAX_FRAMES", default=768),  # frames over all of them
    "REUSED": env.int("STATEBAG_API_MAX_REUSED", default=768),  # stored blobs a prepare pins
    "PARENTS": env.int("STATEBAG_API_MAX_PARENTS", default=16),
    "ENTRIES": env.int("STATEBAG_API_MAX_ENTRIES", default=512),  # fields of a commit or a job
    "POINTERS": env.int("STATEBAG_API_MAX_POINTERS", default=768),  # blob pointers in a commit
    "COHORT": env.int("STATEBAG_API_MAX_COHORT", default=64),  # flag values a commit records
    # A commit's entries as JSON: what it writes under the lock (a job's state may be larger).
    "ENTRY_BYTES": env.int("STATEBAG_API_MAX_ENTRY_BYTES", default=1024 * 1024),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# What the rollout admin shows of telemetry, by dotted path (rollout does not import telemetry);
# empty, the admin works without it and says so. A flag is a cleanup candidate once it has
# served one value to everyone, or gone unevaluated, for ROLLOUT_STALE_DAYS.
ROLLOUT_FLAG_INSIGHTS = env.str("ROLLOUT_FLAG_INSIGHTS", default="telemetry.insights.flag_insights")
ROLLOUT_PLAN_INSIGHTS = env.str("ROLLOUT_PLAN_INSIGHTS", default="telemetry.insights.plan_insights")
ROLLOUT_FLAG_ACTIVITY = env.str("ROLLOUT_FLAG_ACTIVITY", default="telemetry.activity.flag_activity")
ROLLOUT_STALE_DAYS = env.int("ROLLOUT_STALE_DAYS", default=30)

# Rollout plan guards, by dotted path (README: Rollout, guards): the built-in one judges each
# step on its own rules from cohort telemetry. A guard that aborts a plan is reported to
# ROLLOUT_WEBHOOK_URL (a JSON POST; empty: none) within ROLLOUT_WEBHOOK_TIMEOUT_SECONDS.
ROLLOUT_GUARDS = env.list("ROLLOUT_GUARDS", default=["telemetry.guards.step_guard"])
ROLLOUT_WEBHOOK_URL = env.str("ROLLOUT_WEBHOOK_URL", default="")
ROLLOUT_WEBHOOK_TIMEOUT_SECONDS = env.float("ROLLOUT_WEBHOOK_TIMEOUT_SECONDS", default=5.0)

from .celery import *  # noqa: E402,F403
from .metrics import *  # noqa: E402,F403
from .storage import *  # noqa: E402,F403
