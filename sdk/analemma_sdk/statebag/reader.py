"""Reading stored values: every blob is checked against its digest before it is used, and
kept in the byte-bounded cache (blobs are immutable, so a cached one is never stale).

Frames of one pack that sit close together are fetched with a single ranged GET, and the
objects one read needs are fetched in parallel: a field built over many versions (the chunks
of a long list) costs one round trip, not one per object.
"""

from __future__ import annotations

from .._containers import Mapping
from .canonical import parse_json, sha256_hex
from .codec import ZstdDictionary, decode
from .errors import (
    BlobNotFoundError,
    BlobTooLargeError,
    CorruptBlobError,
    ForeignDictionaryError,
    MalformedPointerError,
    UnknownDictionaryError,
)
from .inline import decode_inline
from .keys import dictionary_key, key_owner, legacy_dictionary_key
from .pointers import BlobRef, InlineRef, Literal, Stored, parse_pointer

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, TypeAlias

    from .cache import BlobCache
    from .stores import BlobStore

    # Whether a frame of an owner may be decoded with a dictionary earlier versions stored in
    # the shared ``dicts/`` folder: always, never, or as a function of (owner id, dictionary
    # id) says.
    LegacyDictionaries: TypeAlias = bool | Callable[[str, str], bool]
    Dictionaries: TypeAlias = Mapping[str, ZstdDictionary] | Iterable[ZstdDictionary]

# A span read fetches the frames between wanted ones too; accept that up to this ratio.
_SPAN_SLACK = 2.0
# Objects of one read fetched at once, at most.
_PARALLEL_FETCHES = 8


def owned_dictionaries(dictionaries: Dictionaries | None) -> dict[tuple[str, str], ZstdDictionary]:
    """Dictionaries by (owner id, dictionary id); each must name the owner it belongs to."""
    values = dictionaries.values() if isinstance(dictionaries, Mapping) else (dictionaries or ())
    owned = {}
    for dictionary in values:
        if not dictionary.owner_id:
            raise ValueError(
                f"dictionary {dictionary.dict_id} names no owner: bind it with "
                "ZstdDictionary(data, owner_id=...) or .for_owner(owner_id)"
            )
        owned[(dictionary.owner_id, dictionary.dict_id)] = dictionary
    return owned


class BlobReader:
    def __init__(
        self,
        store: BlobStore,
        cache: BlobCache,
        *,
        max_blob_bytes: int,
        dictionaries: Dictionaries | None = None,
        legacy_dictionaries: LegacyDictionaries = True,
    ) -> None:
        """``dictionaries``: known ones, each bound to its owner. ``legacy_dictionaries``: see
        ``LegacyDictionaries``; a reader that serves several tenants passes a function."""
        self.store = store
        self.cache = cache
        self.max_blob_bytes = max_blob_bytes
        self._dictionaries = owned_dictionaries(dictionaries)
        self._legacy_dictionaries = legacy_dictionaries

    def load(self, pointer: Stored) -> Any:
        """The value a pointer stands for."""
        if isinstance(pointer, Literal):
            return pointer.value
        if isinstance(pointer, InlineRef):
            return parse_json(decode_inline(pointer, self.max_blob_bytes))
        if isinstance(pointer, BlobRef):
            return parse_json(self.read_blobs([pointer])[0])
        items: list[Any] = []
        for chunk, raw in zip(pointer.chunks, self.read_blobs(pointer.blob_refs()), strict=True):
            part = parse_json(raw)
            if not isinstance(part, list) or len(part) != chunk.items:
                raise CorruptBlobError("list chunk does not hold the items its pointer promises")
            items.extend(part)
        items.extend(pointer.tail)
        return items

    def load_field_map(self, pointer_json: Any) -> dict[str, Any]:
        """The fields of a payload whose field map was spilled into a blob."""
        pointer = parse_pointer(pointer_json)
        if not isinstance(pointer, BlobRef):
            raise MalformedPointerError("the spilled field map must be a blob pointer")
        fields = self.load(pointer)
        if not isinstance(fields, dict):
            raise CorruptBlobError("the spilled field map is not an object")
        return fields

    def read_blobs(self, refs: list[BlobRef]) -> list[bytes]:
        """Verified raw bytes of each ref, from the cache or the store."""
        # Checked before any fetch: a pointer's declared size is the caller's claim.
        for ref in refs:
            if ref.raw_size > self.max_blob_bytes:
                raise BlobTooLargeError(
                    f"blob {ref.digest[:12]} declares {ref.raw_size} bytes, over the "
                    f"{self.max_blob_bytes}-byte ceiling"
                )
        found: dict[str, bytes] = {}
        missing: dict[str, list[BlobRef]] = {}
        for ref in refs:
            cached = self.cache.get(ref.digest)
            if cached is not None:
                found[ref.digest] = cached
            elif ref.digest not in found:
                missing.setdefault(ref.key, []).append(ref)
        for ref, frame in self._fetch_all(missing):
            raw = decode(ref.codec, frame, ref.raw_size, self.dictionary(ref.key, ref.dict_id))
            if sha256_hex(raw) != ref.digest:
                raise CorruptBlobError(f"blob {ref.digest[:12]} fails its digest check")
            self.cache.put(ref.digest, raw)
            found[ref.digest] = raw
        return [found[ref.digest] for ref in refs]

    def _fetch_all(self, missing: Mapping[str, list[BlobRef]]) -> list[tuple[BlobRef, bytes]]:
        """The frames of every object, the objects fetched in parallel when there are several."""
        if len(missing) <= 1:
            return [pair for key, group in missing.items() for pair in self._fetch_frames(key, group)]
        from concurrent.futures import ThreadPoolExecutor  # only reads of several objects need it

        workers = min(_PARALLEL_FETCHES, len(missing))
        with ThreadPoolExecutor(workers, thread_name_prefix="statebag-read") as pool:
            parts = list(pool.map(lambda item: self._fetch_frames(*item), missing.items()))
        return [pair for part in parts for pair in part]

    def _fetch_frames(self, key: str, refs: list[BlobRef]) -> list[tuple[BlobRef, bytes]]:
        unique = list({(r.offset, r.length): r for r in refs}.values())
        if len(unique) == 1 and unique[0].whole:
            frame = self.store.get(key)
            return [(unique[0], _checked_frame(unique[0], frame))]
        start = min(r.offset for r in unique)
        end = max(r.offset + r.length for r in unique)
        wanted = sum(r.length for r in unique)
        if len(unique) > 1 and end - start <= wanted * _SPAN_SLACK:
            span = self.store.get_range(key, start, end - start)
            return [
                (r, _checked_frame(r, span[r.offset - start : r.offset - start + r.length])) for r in unique
            ]
        return [(r, _checked_frame(r, self.store.get_range(key, r.offset, r.length))) for r in unique]

    def dictionary(self, key: str, dict_id: str | None) -> ZstdDictionary | None:
        """The compression dictionary a frame of the object at ``key`` names. Only the owner of
        that object's dictionaries are candidates: one handed to this reader for that owner,
        the one under the owner's prefix in the store, or (for frames written by earlier
        versions) the shared legacy one if ``legacy_dictionaries`` allows it."""
        if dict_id is None:
            return None
        owner_id = key_owner(key)
        if owner_id is None:
            raise ForeignDictionaryError(
                f"{key} is outside every owner's prefix: its frames use no dictionary"
            )
        dictionary = self._dictionaries.get((owner_id, dict_id))
        if dictionary is not None:
            return dictionary
        try:
            data = self.store.get(dictionary_key(owner_id, dict_id))
        except BlobNotFoundError:
            data = self._legacy_dictionary(owner_id, dict_id)
        dictionary = ZstdDictionary(data, owner_id=owner_id)
        if dictionary.dict_id != dict_id:
            raise CorruptBlobError(f"dictionary {dict_id} in the store fails its digest check")
        self._dictionaries[(owner_id, dict_id)] = dictionary
        return dictionary

    def _legacy_dictionary(self, owner_id: str, dict_id: str) -> bytes:
        allowed = self._legacy_dictionaries
        if allowed is True or (callable(allowed) and allowed(owner_id, dict_id)):
            try:
                return self.store.get(legacy_dictionary_key(dict_id))
            except BlobNotFoundError:
                pass
        if any(known == dict_id for _, known in self._dictionaries):
            raise ForeignDictionaryError(f"dictionary {dict_id} belongs to another owner than {owner_id}")
        raise UnknownDictionaryError(f"owner {owner_id} has no dictionary {dict_id} in the store")


def _checked_frame(ref: BlobRef, frame: bytes) -> bytes:
    if len(frame) != ref.length:
        raise CorruptBlobError(f"blob {ref.digest[:12]}: read {len(frame)} bytes, expected {ref.length}")
    return frame
