"""Pack format: many independently compressed frames in one immutable object.

Layout (version 1)::

    b"ASBP" | u16 version | u16 flags      8-byte header
    frame 0 | frame 1 | ...                  each frame one blob, readable by one ranged GET
    index                                    canonical JSON: {"v": 1, "blobs": [entry, ...]}
    u32 index length | u32 crc32(index) | b"PBSA"   12-byte footer

An index entry is {"d": digest, "o": offset, "n": length, "c": codec, "s": raw size, "x": dict id
or null}. Offsets are absolute, so a pointer taken from the index reads its frame directly.
The index makes a pack self-describing for audits and recovery; readers of a single field
never need it.
"""

from __future__ import annotations

import struct
import zlib

from .._record import Record
from .canonical import canonical_json, is_digest, parse_json, sha256_hex
from .codec import CODECS, Encoded
from .errors import CorruptPackError

MAGIC = b"ASBP"
END_MAGIC = b"PBSA"
VERSION = 1
HEADER = struct.Struct(">4sHH")
FOOTER = struct.Struct(">II4s")
MAX_INDEX_BYTES = 16 * 1024 * 1024


class FrameRef(Record, frozen=True):
    """Where one blob's frame sits in a pack, and how to decode it."""

    digest: str
    offset: int
    length: int
    codec: str
    raw_size: int
    dict_id: str | None = None

    def as_index_entry(self) -> dict[str, object]:
        return {
            "d": self.digest,
            "o": self.offset,
            "n": self.length,
            "c": self.codec,
            "s": self.raw_size,
            "x": self.dict_id,
        }


class BuiltPack(Record, frozen=True):
    data: bytes
    digest: str
    frames: tuple[FrameRef, ...]


def build_pack(blobs: list[tuple[str, int, Encoded]]) -> BuiltPack:
    """Assemble a pack from (digest, raw size, encoded frame) triples."""
    parts = [HEADER.pack(MAGIC, VERSION, 0)]
    offset = HEADER.size
    frames = []
    for digest, raw_size, encoded in blobs:
        frames.append(FrameRef(digest, offset, len(encoded.data), encoded.codec, raw_size, encoded.dict_id))
        parts.append(encoded.data)
        offset += len(encoded.data)
    index = canonical_json({"v": VERSION, "blobs": [f.as_index_entry() for f in frames]})
    parts.append(index)
    parts.append(FOOTER.pack(len(index), zlib.crc32(index), END_MAGIC))
    data = b"".join(parts)
    return BuiltPack(data, sha256_hex(data), tuple(frames))


def read_pack_index(data: bytes) -> tuple[FrameRef, ...]:
    """Parse and check a whole pack's header, footer and index."""
    if len(data) < HEADER.size + FOOTER.size:
        raise CorruptPackError("pack is truncated")
    magic, version, _flags = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise CorruptPackError("not a pack: bad magic")
    if version != VERSION:
        raise CorruptPackError(f"unsupported pack version {version}")
    index_len, crc, end_magic = FOOTER.unpack_from(data, len(data) - FOOTER.size)
    if end_magic != END_MAGIC:
        raise CorruptPackError("pack footer is damaged or the pack is truncated")
    index_start = len(data) - FOOTER.size - index_len
    if index_len > MAX_INDEX_BYTES or index_start < HEADER.size:
        raise CorruptPackError("pack index length is out of range")
    index = data[index_start : len(data) - FOOTER.size]
    if zlib.crc32(index) != crc:
        raise CorruptPackError("pack index checksum mismatch")
    try:
        document = parse_json(index)
        entries = document["blobs"]
        frames = tuple(_frame_from_entry(entry) for entry in entries)
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptPackError(f"pack index is malformed: {exc}") from exc
    for frame in frames:
        if frame.offset < HEADER.size or frame.offset + frame.length > index_start:
            raise CorruptPackError("pack index points outside the frame area")
    return frames


def _frame_from_entry(entry: dict[str, object]) -> FrameRef:
    digest, offset, length = entry["d"], entry["o"], entry["n"]
    codec, raw_size, dict_id = entry["c"], entry["s"], entry.get("x")
    if not is_digest(digest) or codec not in CODECS:
        raise ValueError("bad digest or codec")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (offset, length, raw_size)):
        raise ValueError("bad offset, length or size")
    if dict_id is not None and not isinstance(dict_id, str):
        raise ValueError("bad dictionary id")
    return FrameRef(digest, offset, length, codec, raw_size, dict_id)  # type: ignore[arg-type]  # checked above
