"""Where the service keeps blobs: a local folder by default, S3 (or MinIO) through
django-storages when STATEBAG_S3_BUCKET is set. The state bag engine's own tuning lives here too."""

from pathlib import Path

from environs import Env

env = Env()

_base_dir = Path(__file__).resolve().parent.parent.parent
_var_dir = Path(env.str("ANALEMMA_VAR_DIR", default=str(_base_dir / "var")))
_bucket = env.str("STATEBAG_S3_BUCKET", default="")

if _bucket:
    _statebag_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": _bucket,
            "location": env.str("STATEBAG_S3_PREFIX", default=""),
            "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("AWS_S3_REGION_NAME", default="") or None,
            "file_overwrite": True,
            "default_acl": None,
        },
    }
else:
    _statebag_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": env.str("STATEBAG_LOCAL_ROOT", default=str(_var_dir / "blobs"))},
    }

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "statebag": _statebag_storage,
}

STATEBAG = {
    "PAYLOAD_BUDGET": env.int("STATEBAG_PAYLOAD_BUDGET", default=16 * 1024),
    "INLINE_THRESHOLD": env.int("STATEBAG_INLINE_THRESHOLD", default=1024),
    # Data-plane values stay in the payload as compressed frames while it fits its budget.
    "INLINE_FRAMES": env.bool("STATEBAG_INLINE_FRAMES", default=True),
    "MAX_BLOB_BYTES": env.int("STATEBAG_MAX_BLOB_BYTES", default=64 * 1024 * 1024),
    "USE_2PC": env.bool("USE_2PC", default=False),
    "ZSTD_LEVEL": env.int("ZSTD_LEVEL", default=3),
    # A prepared transaction not committed within this many seconds is aborted by the reaper.
    "TRANSACTION_TTL_SECONDS": env.int("STATEBAG_TRANSACTION_TTL_SECONDS", default=15 * 60),
    # GC deletes an unreferenced pack only once it is older than this.
    "GC_GRACE_SECONDS": env.int("STATEBAG_GC_GRACE_SECONDS", default=60 * 60),
    # Retention: a running execution keeps its head, its last K versions and pinned ones.
    "RETAIN_LAST_VERSIONS": env.int("STATEBAG_RETAIN_LAST_VERSIONS", default=10),
    "FINISHED_TTL_DAYS": env.int("STATEBAG_FINISHED_TTL_DAYS", default=30),
    # GC work goes to this Celery queue (the original system's dead-letter queue for cleanups):
    # a queue name, or a URL whose last path segment names it (an SQS queue URL, say).
    "GC_DLQ_URL": env.str("GC_DLQ_URL", default=""),
    # Envelope segments (statebag.write_envelopes): an execution's new versions are written once
    # its last commit is this many seconds old, or it finished, or this many versions wait.
    "ENVELOPE_QUIET_SECONDS": env.int("STATEBAG_ENVELOPE_QUIET_SECONDS", default=60),
    "ENVELOPE_MAX_VERSIONS": env.int("STATEBAG_ENVELOPE_MAX_VERSIONS", default=256),
    # A segment is cut once its body (uncompressed) reaches this size.
    "ENVELOPE_MAX_BYTES": env.int("STATEBAG_ENVELOPE_MAX_BYTES", default=16 * 1024 * 1024),
    # Segments written per run of the task, at most.
    "ENVELOPE_BATCH": env.int("STATEBAG_ENVELOPE_BATCH", default=200),
}
