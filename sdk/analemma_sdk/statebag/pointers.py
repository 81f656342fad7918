"""Self-describing pointers that replace large fields in the control-plane payload.

A pointer is a JSON object with a "$sb" tag:

* ``{"$sb": "blob", "v": 1, "d": digest, "k": key, "o": offset, "n": length, "c": codec,
  "s": raw size, "x": dict id (optional), "w": true when the object is the whole frame}``
* ``{"$sb": "list", "v": 1, "len": items, "chunks": [blob pointer + "i": item count, ...],
  "tail": [inline items]}`` — an append-only list: sealed chunks in the store, recent items inline.
* ``{"$sb": "z", "v": 1, "d": digest, "s": raw size, "c": "deflate", "b": base85 frame}`` — a
  value kept in the payload, compressed (see inline.py).
* ``{"$sb": "lit", "v": 1, "value": ...}`` — escapes a user value that itself carries "$sb".

parse_pointer() checks every field; anything off is a MalformedPointerError, never a guess.
"""

from __future__ import annotations

from .._record import Record
from .canonical import is_digest
from .codec import CODECS
from .errors import InvalidKeyError, MalformedPointerError
from .keys import validate_key

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any

TAG = "$sb"
POINTER_VERSION = 1
_MAX_INT = 2**53


class BlobRef(Record, frozen=True):
    digest: str
    key: str
    offset: int
    length: int
    codec: str
    raw_size: int
    dict_id: str | None = None
    whole: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            TAG: "blob",
            "v": POINTER_VERSION,
            "d": self.digest,
            "k": self.key,
            "o": self.offset,
            "n": self.length,
            "c": self.codec,
            "s": self.raw_size,
        }
        if self.dict_id:
            data["x"] = self.dict_id
        if self.whole:
            data["w"] = True
        return data


class ChunkRef(Record, frozen=True):
    blob: BlobRef
    items: int

    def to_json(self) -> dict[str, Any]:
        data = self.blob.to_json()
        del data[TAG], data["v"]
        data["i"] = self.items
        return data


class ListRef(Record, frozen=True):
    length: int
    chunks: tuple[ChunkRef, ...]
    tail: tuple[Any, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            TAG: "list",
            "v": POINTER_VERSION,
            "len": self.length,
            "chunks": [chunk.to_json() for chunk in self.chunks],
            "tail": list(self.tail),
        }

    def blob_refs(self) -> list[BlobRef]:
        return [chunk.blob for chunk in self.chunks]


INLINE_KIND = "z"
DEFLATE = "deflate"
_MAX_INLINE_FRAME = 1024 * 1024  # base85 characters; a payload is far smaller


class InlineRef(Record, frozen=True):
    digest: str
    raw_size: int
    codec: str
    frame: str  # base85 text

    def to_json(self) -> dict[str, Any]:
        return {
            TAG: INLINE_KIND,
            "v": POINTER_VERSION,
            "d": self.digest,
            "s": self.raw_size,
            "c": self.codec,
            "b": self.frame,
        }


class Literal(Record, frozen=True):
    value: Any


Stored = BlobRef | ListRef | InlineRef | Literal


def literal_json(value: Any) -> dict[str, Any]:
    return {TAG: "lit", "v": POINTER_VERSION, "value": value}


def needs_escape(value: Any) -> bool:
    return isinstance(value, dict) and TAG in value


def is_pointer(value: Any) -> bool:
    return isinstance(value, dict) and TAG in value


def parse_pointer(value: Any) -> Stored | None:
    """Return the pointer ``value`` describes, None for a plain value, or raise."""
    if not is_pointer(value):
        return None
    kind = value.get(TAG)
    if value.get("v") != POINTER_VERSION:
        raise MalformedPointerError(f"unsupported pointer version {value.get('v')!r}")
    if kind == "blob":
        return _parse_blob(value, allowed_extra={"w"})
    if kind == "list":
        return _parse_list(value)
    if kind == INLINE_KIND:
        return _parse_inline(value)
    if kind == "lit":
        if set(value) != {TAG, "v", "value"}:
            raise MalformedPointerError("literal pointer has unexpected fields")
        return Literal(value["value"])
    raise MalformedPointerError(f"unknown pointer kind {kind!r}")


def _int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _MAX_INT:
        raise MalformedPointerError(f"pointer field {name!r} must be a non-negative integer")
    return value


def _parse_blob(data: Any, allowed_extra: set[str]) -> BlobRef:
    if not isinstance(data, dict):
        raise MalformedPointerError("blob pointer must be an object")
    known = {TAG, "v", "d", "k", "o", "n", "c", "s", "x"} | allowed_extra
    if set(data) - known:
        raise MalformedPointerError(f"blob pointer has unexpected fields {sorted(set(data) - known)}")
    digest, codec, dict_id = data.get("d"), data.get("c"), data.get("x")
    if not is_digest(digest):
        raise MalformedPointerError("blob pointer digest must be 64 lowercase hex characters")
    if not isinstance(codec, str) or codec not in CODECS:
        raise MalformedPointerError(f"blob pointer codec {codec!r} is unknown")
    if dict_id is not None and not (isinstance(dict_id, str) and dict_id.isalnum() and len(dict_id) <= 64):
        raise MalformedPointerError("blob pointer dictionary id is malformed")
    try:
        key = validate_key(data.get("k"))
    except InvalidKeyError as exc:
        raise MalformedPointerError(str(exc)) from exc
    whole = data.get("w", False)
    if not isinstance(whole, bool):
        raise MalformedPointerError("blob pointer field 'w' must be a boolean")
    return BlobRef(
        digest=digest,
        key=key,
        offset=_int(data.get("o"), "o"),
        length=_int(data.get("n"), "n"),
        codec=codec,
        raw_size=_int(data.get("s"), "s"),
        dict_id=dict_id,
        whole=whole,
    )


def _parse_inline(data: dict[str, Any]) -> InlineRef:
    if set(data) != {TAG, "v", "d", "s", "c", "b"}:
        raise MalformedPointerError("inline frame must have exactly d, s, c and b")
    digest, codec, frame = data["d"], data["c"], data["b"]
    if not is_digest(digest):
        raise MalformedPointerError("inline frame digest must be 64 lowercase hex characters")
    if codec != DEFLATE:
        raise MalformedPointerError(f"inline frame codec {codec!r} is unknown")
    if not isinstance(frame, str) or len(frame) > _MAX_INLINE_FRAME or not frame.isascii():
        raise MalformedPointerError("inline frame bytes must be base85 text of at most 1 MiB")
    return InlineRef(digest, _int(data["s"], "s"), codec, frame)


def _parse_list(data: dict[str, Any]) -> ListRef:
    if set(data) != {TAG, "v", "len", "chunks", "tail"}:
        raise MalformedPointerError("list pointer must have exactly len, chunks and tail")
    chunks_json, tail = data["chunks"], data["tail"]
    if not isinstance(chunks_json, list) or not isinstance(tail, list):
        raise MalformedPointerError("list pointer chunks and tail must be arrays")
    chunks = []
    for chunk in chunks_json:
        if not isinstance(chunk, dict):
            raise MalformedPointerError("list chunk must be an object")
        items = _int(chunk.get("i"), "i")
        blob = _parse_blob({k: v for k, v in chunk.items() if k != "i"} | {TAG: "blob", "v": 1}, set())
        chunks.append(ChunkRef(blob, items))
    length = _int(data["len"], "len")
    if length != sum(c.items for c in chunks) + len(tail):
        raise MalformedPointerError("list pointer length does not match its chunks and tail")
    return ListRef(length, tuple(chunks), tuple(tail))
