"""get_hydrator(): one shared hydrator per distinct configuration, configured from arguments,
the environment the way the original system was (USE_BATCHING, USE_ZSTD, ZSTD_LEVEL, USE_2PC),
the execution's own payload and the flag set (precedence in ``config``).

Hydrators with different configurations share one store (and so one set of clients).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .config import resolve_config
from .stores import BlobStore, LocalFolderStore

_lock = threading.Lock()
_hydrators: dict[tuple[Any, ...], Any] = {}
_default_store: BlobStore | None = None
_default_manifest_store: Any = None


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
            url = os.environ.get("STATEBAG_STORE_URL")
            if not url:
                import tempfile  # noqa: PLC0415 - only without a configured store

                url = os.path.join(tempfile.gettempdir(), "analemma-statebag")
            _default_store = store_from_url(url)
        return _default_store


def default_manifest_store() -> Any:
    """An HttpManifestStore when STATEBAG_SERVICE_URL and STATEBAG_WRITE_KEY are set (a Lambda
    committing through the service), else None."""
    global _default_manifest_store
    url, key = os.environ.get("STATEBAG_SERVICE_URL"), os.environ.get("STATEBAG_WRITE_KEY")
    if not (url and key):
        return None
    with _lock:
        if _default_manifest_store is None:
            from .http_store import HttpManifestStore  # noqa: PLC0415 - http only when configured

            _default_manifest_store = HttpManifestStore(
                url, key, upload=os.environ.get("STATEBAG_UPLOAD", "direct") or "direct"
            )
        return _default_manifest_store


def get_hydrator(
    *,
    use_batching: bool | None = None,
    use_zstd: bool | None = None,
    zstd_level: int | None = None,
    use_2pc: bool | None = None,
    store: BlobStore | None = None,
    flags: Any = None,
    unit: str | None = None,
    event: Any = None,
    **options: Any,
) -> Any:
    """The shared StateHydrator for this configuration.

    ``flags`` (a FlagClient) with ``unit`` (the execution id), or ``event`` to read the
    execution id — and the configuration the execution already runs with — from the payload.
    Precedence, per setting: argument, environment variable, the execution's recorded
    configuration, the flag set, legacy default (see ``analemma_sdk.statebag.config``)."""
    from .hydrator import StateHydrator  # noqa: PLC0415 - keeps the package import light

    config = resolve_config(
        explicit={
            "use_batching": use_batching,
            "use_zstd": use_zstd,
            "zstd_level": zstd_level,
            "use_2pc": use_2pc,
        },
        flags=flags,
        unit=unit,
        event=event,
    )
    resolved_store = store if store is not None else default_store()
    if "manifest_store" not in options and config.use_2pc:
        options["manifest_store"] = default_manifest_store()
    key = (
        config.use_batching,
        config.use_zstd,
        config.zstd_level,
        config.use_2pc,
        id(resolved_store),
        tuple(sorted((k, id(v) if k == "manifest_store" else repr(v)) for k, v in options.items())),
    )
    with _lock:
        hydrator = _hydrators.get(key)
        if hydrator is None:
            hydrator = StateHydrator(
                use_batching=config.use_batching,
                use_zstd=config.use_zstd,
                compression_level=config.zstd_level,
                use_2pc=config.use_2pc,
                store=resolved_store,
                **options,
            )
            _hydrators[key] = hydrator
        return hydrator


def reset_hydrators() -> None:
    """Forget shared hydrators and default stores (tests, or after changing the env)."""
    global _default_store, _default_manifest_store
    with _lock:
        _hydrators.clear()
        _default_store = None
        _default_manifest_store = None
