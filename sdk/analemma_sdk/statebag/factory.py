"""get_hydrator(): one shared hydrator per distinct configuration, configured from arguments,
the environment the way the original system was (USE_BATCHING, USE_ZSTD, ZSTD_LEVEL, USE_2PC),
the execution's own payload and the flag set (precedence in ``config``).

Hydrators with different configurations share one store (and so one set of clients).

A client with the service's URL and a write key but no store of its own (no
STATEBAG_STORE_URL, no ``store``) keeps its state in the service's store: it reads it through
the service and writes it only at the upload URLs of a prepared transaction, so it commits in
two phases through the service whatever ``use_2pc`` resolves to (and its payloads record
``use_2pc`` on, the configuration they were written with).

Telemetry: a hydrator reports through the flag client it is given (``telemetry=``, else
``flags=``), else through the process's default client (``flags.set_default_client``), else,
with STATEBAG_SERVICE_URL and STATEBAG_WRITE_KEY set, with its write key to the same service
(a batch at most every 30 s, after a dehydration; ``hydrator.telemetry.sink.flush()`` at the end
of a handler). ``telemetry=False`` or ``ANALEMMA_TELEMETRY=false``: none.
"""

from __future__ import annotations

import _thread
import os
import sys

from .store_urls import default_store, reset_default_store, store_from_url

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any

    from .hydrator import StateHydrator
    from .manifest_protocols import ManifestStore
    from .stores import BlobStore

# default_store and store_from_url live in store_urls.py (the hydrator needs the default store
# too); they are still reached from here, as before. The engine itself (config, hydrator) loads
# when the first hydrator is built, not when this module is imported.
__all__ = ["default_manifest_store", "default_store", "get_hydrator", "reset_hydrators", "store_from_url"]

_lock = _thread.allocate_lock()
_hydrators: dict[tuple[Any, ...], StateHydrator] = {}
_default_manifest_store: ManifestStore | None = None


def default_manifest_store() -> ManifestStore | None:
    """An HttpManifestStore when STATEBAG_SERVICE_URL and STATEBAG_WRITE_KEY are set (a Lambda
    committing through the service), else None."""
    global _default_manifest_store
    url, key = os.environ.get("STATEBAG_SERVICE_URL"), os.environ.get("STATEBAG_WRITE_KEY")
    if not (url and key):
        return None
    with _lock:
        if _default_manifest_store is None:
            from .http_store import HttpManifestStore  # http only when configured

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
    telemetry: Any = None,
    **options: Any,
) -> StateHydrator:
    """The shared StateHydrator for this configuration.

    ``flags`` (a FlagClient) with ``unit`` (the execution id), or ``event`` to read the
    execution id — and the configuration the execution already runs with — from the payload.
    Precedence, per setting: argument, environment variable, the execution's recorded
    configuration, the flag set, legacy default (see ``analemma_sdk.statebag.config``).
    ``telemetry``: where the hydrator's counts go (see the module docstring)."""
    from .config import resolve_config
    from .hydrator import StateHydrator

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
    use_2pc = config.use_2pc
    if "manifest_store" not in options and use_2pc:
        options["manifest_store"] = default_manifest_store()
    through_service = False
    if store is None and not os.environ.get("STATEBAG_STORE_URL"):
        manifest_store = (
            options["manifest_store"] if "manifest_store" in options else default_manifest_store()
        )
        pack_store = getattr(manifest_store, "pack_store", None)
        if callable(pack_store):
            # No store of its own (only the service's URL and a write key): the service is the
            # store. Read it through the service and upload to the URLs prepare hands out,
            # which only a two-phase commit does.
            store = pack_store()
            options["manifest_store"] = manifest_store
            through_service = not use_2pc
            use_2pc = True
    resolved_store = store if store is not None else default_store()
    sink = _telemetry_for(telemetry, flags)
    key = (
        config.use_batching,
        config.use_zstd,
        config.zstd_level,
        use_2pc,
        id(resolved_store),
        tuple(sorted((k, id(v) if k == "manifest_store" else repr(v)) for k, v in options.items())),
    )
    with _lock:
        hydrator = _hydrators.get(key)
        if hydrator is None:
            hydrator = StateHydrator(
                use_batching=config.use_batching,
                use_zstd=config.use_zstd,
                zstd_level=config.zstd_level,
                use_2pc=use_2pc,
                store=resolved_store,
                telemetry=sink,
                **options,
            )
            _hydrators[key] = hydrator
            if through_service:
                from . import metrics

                metrics.logger().info(
                    "use_2pc is off (%s) but this client has no store of its own "
                    "(STATEBAG_STORE_URL): committing in two phases through the service",
                    config.sources["use_2pc"],
                )
            if sink is not None and hydrator.telemetry is not None and _owns(sink):
                # Nothing else sends this sink's batches (no flag client refreshes it).
                hydrator.telemetry.send_every(WRITE_KEY_FLUSH_EVERY)
        elif sink is not None and hydrator.telemetry is not None and hydrator.telemetry.sink is not sink:
            # One hydrator per configuration, whichever client asks: it reports to the latest.
            hydrator.telemetry.retarget(sink)
            hydrator.telemetry.send_every(WRITE_KEY_FLUSH_EVERY if _owns(sink) else None)
        return hydrator


WRITE_KEY_FLUSH_EVERY = 30.0


def _telemetry_for(telemetry: Any, flags: Any) -> Any:
    """Where a hydrator's counts go: the argument, the flag client, the process's default
    client, the write key's own telemetry; None when off."""
    from .. import telemetry_enabled

    if telemetry is False or not telemetry_enabled(None):
        return None
    chosen = telemetry if telemetry is not None else flags
    if chosen is None:
        client_module = sys.modules.get("analemma_sdk.flags.client")  # only if a client exists
        chosen = client_module.default_client() if client_module is not None else None
    if chosen is not None:
        if getattr(chosen, "recorder", None) is not None:
            return chosen  # a Telemetry
        sink = getattr(chosen, "telemetry_sink", None)
        try:
            return sink() if callable(sink) else None  # a flags object of another kind: none
        except Exception:  # a broken flags object must not stop the hydrator
            return None
    url, key = os.environ.get("STATEBAG_SERVICE_URL"), os.environ.get("STATEBAG_WRITE_KEY")
    if url and key:
        from ..telemetry.hydration import service_telemetry

        return service_telemetry(url, key)
    return None


def _owns(sink: Any) -> bool:
    """Whether ``sink`` is a write key's telemetry (sent by the hydrator) rather than a flag
    client's (sent with its refreshes)."""
    module = sys.modules.get("analemma_sdk.telemetry.hydration")
    return module is not None and any(sink is known for known in module._services.values())


def reset_hydrators() -> None:
    """Forget shared hydrators and default stores (tests, or after changing the env)."""
    global _default_manifest_store
    with _lock:
        _hydrators.clear()
        _default_manifest_store = None
    reset_default_store()
