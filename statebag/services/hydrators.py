"""The service's own hydrators: batched and zstd, two-phase per settings, on the service
store, with the workflow's active dictionary. One per (workflow, dictionary), shared in
process."""

from __future__ import annotations

import threading

from analemma_sdk.statebag import StateHydrator, ZstdDictionary
from analemma_sdk.statebag.keys import dictionary_key

from ..conf import statebag_settings
from ..models import CompressionDictionary
from .stores import statebag_store
from .versioning import StateVersioningService

_lock = threading.Lock()
_hydrators: dict[tuple[str, str], StateHydrator] = {}


def service_hydrator(workflow_id: str) -> StateHydrator:
    active = CompressionDictionary.objects.filter(workflow_id=workflow_id, active=True).first()
    key = (workflow_id, active.dict_id if active else "")
    with _lock:
        hydrator = _hydrators.get(key)
        if hydrator is None:
            configured = statebag_settings()
            store = statebag_store()
            dictionary = ZstdDictionary(store.get(dictionary_key(active.dict_id))) if active else None
            hydrator = StateHydrator(
                use_batching=True,
                use_zstd=True,
                zstd_level=configured.zstd_level,
                use_2pc=configured.use_2pc,
                payload_budget=configured.payload_budget,
                inline_threshold=configured.inline_threshold,
                max_blob_bytes=configured.max_blob_bytes,
                store=store,
                dictionary=dictionary,
                manifest_store=StateVersioningService(),
            )
            _hydrators[key] = hydrator
        return hydrator


def reset_service_hydrators() -> None:
    with _lock:
        _hydrators.clear()
