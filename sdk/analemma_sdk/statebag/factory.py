"""get_hydrator(): one shared hydrator per distinct configuration, configured from the
environment the way the original system was (USE_BATCHING, USE_ZSTD, ZSTD_LEVEL).

Precedence: explicit arguments, then environment variables, then the legacy defaults.
Hydrators with different configurations share one store (and so one set of clients).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

from .codec import DEFAULT_ZSTD_LEVEL, validate_level
from .stores import BlobStore, LocalFolderStore

logger = logging.getLogger("analemma_sdk.statebag")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

_lock = threading.Lock()
_hydrators: dict[tuple[Any, ...], Any] = {}
_default_store: BlobStore | None = None


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    raw = (environ if environ is not None else os.environ).get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    logger.warning("ignoring %s=%r: expected true/false; using %s", name, raw, default)
    return default


def env_level(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    raw = (environ if environ is not None else os.environ).get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return validate_level(int(raw))
    except ValueError:
        logger.warning("ignoring %s=%r: expected an integer 1-22; using %s", name, raw, default)
        return default


def store_from_url(url: str) -> BlobStore:
    """``file:///path`` or a bare path for a local folder; ``s3://bucket/prefix`` for S3
    (endpoint from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, as boto3 reads them)."""
    if url.startswith("s3://"):
        from .s3 import S3Store  # noqa: PLC0415 - boto3 only when S3 is configured

        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"store URL {url!r} names no bucket")
        return S3Store(bucket, prefix)
    if url.startswith("file://"):
        url = url[len("file://") :]
    if not url:
        raise ValueError("store URL names no folder")
    return LocalFolderStore(url)


def default_store() -> BlobStore:
    """The store named by STATEBAG_STORE_URL, else a folder in the temp dir (writable on Lambda)."""
    global _default_store
    with _lock:
        if _default_store is None:
            url = os.environ.get("STATEBAG_STORE_URL") or os.path.join(
                tempfile.gettempdir(), "analemma-statebag"
            )
            _default_store = store_from_url(url)
        return _default_store


def get_hydrator(
    *,
    use_batching: bool | None = None,
    use_zstd: bool | None = None,
    zstd_level: int | None = None,
    store: BlobStore | None = None,
    **options: Any,
) -> Any:
    """The shared StateHydrator for this configuration (explicit arguments win over env)."""
    from .hydrator import StateHydrator  # noqa: PLC0415 - keeps the package import light

    batching = env_bool("USE_BATCHING", False) if use_batching is None else bool(use_batching)
    zstd = env_bool("USE_ZSTD", False) if use_zstd is None else bool(use_zstd)
    level = env_level("ZSTD_LEVEL", DEFAULT_ZSTD_LEVEL) if zstd_level is None else validate_level(zstd_level)
    resolved_store = store if store is not None else default_store()
    key = (batching, zstd, level, id(resolved_store), tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _lock:
        hydrator = _hydrators.get(key)
        if hydrator is None:
            hydrator = StateHydrator(
                use_batching=batching,
                use_zstd=zstd,
                compression_level=level,
                store=resolved_store,
                **options,
            )
            _hydrators[key] = hydrator
        return hydrator


def reset_hydrators() -> None:
    """Forget shared hydrators and the default store (tests, or after changing the env)."""
    global _default_store
    with _lock:
        _hydrators.clear()
        _default_store = None
