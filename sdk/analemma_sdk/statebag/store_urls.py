"""Stores named by URL, and the process-wide default store.

Apart from factory.py so the hydrator can fall back to the default store without importing
the factory that builds hydrators, and apart from stores.py because S3 support (s3.py) is
itself built on stores.py.
"""

from __future__ import annotations

import _thread
import os

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from .stores import BlobStore

_lock = _thread.allocate_lock()
_default_store: BlobStore | None = None


def store_from_url(url: str) -> BlobStore:
    """``file:///path`` or a bare path for a local folder; ``s3://bucket/prefix`` for S3
    (endpoint from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, as boto3 reads them)."""
    if url.startswith("s3://"):
        from .s3 import S3Store  # boto3 only when S3 is configured

        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"store URL {url!r} names no bucket")
        return S3Store(bucket, prefix)
    if url.startswith("file://"):
        url = url[len("file://") :]
    if not url:
        raise ValueError("store URL names no folder")
    from .stores import LocalFolderStore  # when a store is first built

    return LocalFolderStore(url)


def default_store() -> BlobStore:
    """The store named by STATEBAG_STORE_URL, else a folder in the temp dir (writable on Lambda)."""
    global _default_store
    with _lock:
        if _default_store is None:
            url = os.environ.get("STATEBAG_STORE_URL")
            if not url:
                import tempfile  # only without a configured store

                url = os.path.join(tempfile.gettempdir(), "analemma-statebag")
            _default_store = store_from_url(url)
        return _default_store


def reset_default_store() -> None:
    """Build the default store afresh on next use (tests, or after changing the env)."""
    global _default_store
    with _lock:
        _default_store = None
