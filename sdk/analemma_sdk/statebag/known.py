"""Known digests: the stored blobs this process has seen, per owner, so a dehydration can
reuse a stored value without asking the store whether it is there.

Bounded (least recently used goes first) and shared by the threads of one hydrator.
"""

from __future__ import annotations

import _thread

from .._containers import OrderedDict
from .keys import owner_packs_prefix
from .pointers import BlobRef, ListRef

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Iterable

    from .pointers import Stored

DEFAULT_LIMIT = 200_000


class KnownDigests:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._refs: OrderedDict[tuple[str, str], BlobRef] = OrderedDict()
        self._lock = _thread.allocate_lock()  # threading's Lock, without importing threading

    def get(self, owner_id: str, digest: str) -> BlobRef | None:
        with self._lock:
            return self._refs.get((owner_id, digest))

    def remember(self, owner_id: str, ref: BlobRef) -> None:
        with self._lock:
            self._refs[(owner_id, ref.digest)] = ref
            self._refs.move_to_end((owner_id, ref.digest))
            while len(self._refs) > self.limit:
                self._refs.popitem(last=False)

    def forget(self, owner_id: str, digests: Iterable[str]) -> None:
        with self._lock:
            for digest in digests:
                self._refs.pop((owner_id, digest), None)

    def remember_pointers(self, owner_id: str, pointers: Iterable[Stored | None]) -> None:
        """Remember the pack frames a hydrated payload points at.

        Only packs under the owner's own prefix count: a payload cannot make this owner's
        writes point at somebody else's objects. Legacy single objects (``whole``) are never
        reused, so they are not remembered either."""
        prefix = owner_packs_prefix(owner_id)
        for pointer in pointers:
            if isinstance(pointer, BlobRef):
                refs = [pointer]
            elif isinstance(pointer, ListRef):
                refs = pointer.blob_refs()
            else:
                continue
            for ref in refs:
                if ref.key.startswith(prefix) and not ref.whole:
                    self.remember(owner_id, ref)
