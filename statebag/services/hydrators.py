"""The service's own hydrators: batched and zstd, two-phase per settings, on the service
store, with the owner's active dictionary for the workflow. One per (owner, workflow,
dictionary), shared in process: the ``MAX_HYDRATORS`` used last are kept, so a worker's memory
does not grow with the number of owners and workflows it served. Their blobs are held in one
byte-bounded cache (``BLOB_CACHE``) in which each hydrator sees only its owner's entries.

Dictionaries are per owner: a hydrator compresses only its owner's values with one, and its
reader resolves a frame's dictionary only under the prefix of the object holding the frame,
or, for frames written by earlier versions, the shared legacy dictionary that the database
records as used by that owner."""

from __future__ import annotations

import threading
from collections import OrderedDict

from analemma_sdk.statebag import CorruptBlobError, StateHydrator, ZstdDictionary
from analemma_sdk.statebag.cache import BlobCache

from ..conf import statebag_settings
from ..models import CompressionDictionary
from .stores import statebag_store
from .versioning import StateVersioningService

MAX_HYDRATORS = 32
BLOB_CACHE_BYTES = 64 * 1024 * 1024

_lock = threading.Lock()
_hydrators: OrderedDict[tuple[str, str, str], StateHydrator] = OrderedDict()


class OwnerBlobCache(BlobCache):
    """One owner's entries of a shared blob cache: stored and found by (owner, digest), so a
    blob one owner read is never the answer to another owner's read of the same digest."""

    def __init__(self, shared: BlobCache, owner_id: str) -> None:
        super().__init__(shared.max_bytes)  # its own entries stay empty: all go to ``shared``
        self.shared = shared
        self.owner_id = owner_id

    def get(self, digest: str) -> bytes | None:
        return self.shared.get(f"{self.owner_id}/{digest}")

    def put(self, digest: str, data: bytes) -> None:
        self.shared.put(f"{self.owner_id}/{digest}", data)

    def clear(self) -> None:
        """Empties the shared cache, every owner's entries with it (blobs are immutable: that
        costs reads, never a wrong answer)."""
        self.shared.clear()


BLOB_CACHE = BlobCache(BLOB_CACHE_BYTES)


def legacy_dictionary_allowed(owner_id: str, dict_id: str) -> bool:
    """Whether ``owner_id``'s frames may be decoded with the shared dictionary ``dict_id`` that an
    earlier version stored: only if that owner's frames already named it then."""
    return CompressionDictionary.objects.filter(owner_id=owner_id, dict_id=dict_id, legacy=True).exists()


def service_hydrator(owner_id: str, workflow_id: str) -> StateHydrator:
    active = CompressionDictionary.objects.filter(
        owner_id=owner_id, workflow_id=workflow_id, active=True, legacy=False
    ).first()
    key = (owner_id, workflow_id, active.dict_id if active else "")
    with _lock:
        hydrator = _hydrators.get(key)
        if hydrator is not None:
            _hydrators.move_to_end(key)
        else:
            configured = statebag_settings()
            store = statebag_store()
            dictionary = None
            if active is not None:
                dictionary = ZstdDictionary(store.get(active.key), owner_id=owner_id)
                if dictionary.dict_id != active.dict_id:
                    raise CorruptBlobError(f"dictionary {active.key} fails its digest check")
            hydrator = StateHydrator(
                use_batching=True,
                use_zstd=True,
                zstd_level=configured.zstd_level,
                use_2pc=configured.use_2pc,
                payload_budget=configured.payload_budget,
                inline_threshold=configured.inline_threshold,
                inline_frames=configured.inline_frames,
                max_blob_bytes=configured.max_blob_bytes,
                store=store,
                cache=OwnerBlobCache(BLOB_CACHE, owner_id),
                dictionary=dictionary,
                legacy_dictionaries=legacy_dictionary_allowed,
                manifest_store=StateVersioningService(),
            )
            _hydrators[key] = hydrator
            while len(_hydrators) > MAX_HYDRATORS:
                _hydrators.popitem(last=False)
        return hydrator


def service_reader() -> StateHydrator:
    """A hydrator that reads blobs on the service store (training samples), resolving
    dictionaries per owner as above."""
    return StateHydrator(
        use_batching=True,
        store=statebag_store(),
        max_blob_bytes=statebag_settings().max_blob_bytes,
        legacy_dictionaries=legacy_dictionary_allowed,
    )


def reset_service_hydrators() -> None:
    with _lock:
        _hydrators.clear()
        BLOB_CACHE.clear()
