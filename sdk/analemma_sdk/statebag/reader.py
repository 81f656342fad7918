"""Reading stored values: every blob is checked against its digest before it is used, and
kept in the byte-bounded cache (blobs are immutable, so a cached one is never stale).

Frames of one pack that sit close together are fetched with a single ranged GET.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from .cache import BlobCache
from .canonical import parse_json, sha256_hex
from .codec import ZstdDictionary, decode
from .errors import (
    BlobNotFoundError,
    BlobTooLargeError,
    CorruptBlobError,
    MalformedPointerError,
    UnknownDictionaryError,
)
from .keys import dictionary_key
from .pointers import BlobRef, Literal, Stored, parse_pointer
from .stores import BlobStore

# A span read fetches the frames between wanted ones too; accept that up to this ratio.
_SPAN_SLACK = 2.0


class BlobReader:
    def __init__(
        self,
        store: BlobStore,
        cache: BlobCache,
        *,
        max_blob_bytes: int,
        dictionaries: Mapping[str, ZstdDictionary] | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.max_blob_bytes = max_blob_bytes
        self._dictionaries = dict(dictionaries or {})

    def load(self, pointer: Stored) -> Any:
        """The value a pointer stands for."""
        if isinstance(pointer, Literal):
            return pointer.value
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
        missing: dict[str, list[BlobRef]] = defaultdict(list)
        for ref in refs:
            cached = self.cache.get(ref.digest)
            if cached is not None:
                found[ref.digest] = cached
            elif ref.digest not in found:
                missing[ref.key].append(ref)
        for key, group in missing.items():
            for ref, frame in self._fetch_frames(key, group):
                raw = decode(ref.codec, frame, ref.raw_size, self.dictionary(ref.dict_id))
                if sha256_hex(raw) != ref.digest:
                    raise CorruptBlobError(f"blob {ref.digest[:12]} fails its digest check")
                self.cache.put(ref.digest, raw)
                found[ref.digest] = raw
        return [found[ref.digest] for ref in refs]

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

    def dictionary(self, dict_id: str | None) -> ZstdDictionary | None:
        """The compression dictionary a frame names: given to the hydrator, or from the store."""
        if dict_id is None:
            return None
        dictionary = self._dictionaries.get(dict_id)
        if dictionary is None:
            try:
                data = self.store.get(dictionary_key(dict_id))
            except BlobNotFoundError:
                raise UnknownDictionaryError(f"dictionary {dict_id} is not in the store") from None
            dictionary = ZstdDictionary(data)
            if dictionary.dict_id != dict_id:
                raise CorruptBlobError(f"dictionary {dict_id} in the store fails its digest check")
            self._dictionaries[dict_id] = dictionary
        return dictionary


def _checked_frame(ref: BlobRef, frame: bytes) -> bytes:
    if len(frame) != ref.length:
        raise CorruptBlobError(f"blob {ref.digest[:12]}: read {len(frame)} bytes, expected {ref.length}")
    return frame
