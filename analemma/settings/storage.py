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
    "MAX_BLOB_BYTES": env.int("STATEBAG_MAX_BLOB_BYTES", default=64 * 1024 * 1024),
    "USE_2PC": env.bool("USE_2PC", default=False),
}
