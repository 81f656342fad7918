"""Inline frames: a data-plane value kept in the payload itself, compressed.

Most workflow states fit their payload budget once compressed: keeping them there costs no
object-store request at all, warm or cold. An inline frame is a pointer that carries its
bytes::

    {"$sb": "z", "v": 1, "d": digest, "s": raw size, "c": "deflate", "b": base85 frame}

``d`` is the sha256 of the value's JSON (``canonical.value_json``), checked on every read
like a blob's. The codec is raw deflate from the standard library rather than zstd: it
costs no import (zstandard alone is ~16 ms of a cold start) and on values of a few KB it
compresses within a few percent of zstd. Base85 keeps the frame a JSON string with no
escapes at 25 % overhead (base64: 33 %).

A manifest's hash covers an inline entry without its ``b`` (``hashed_form``): the digest
already pins the content, and a reader with only storage access can then check a version
from the decoded values an envelope keeps.
"""

from __future__ import annotations

import zlib

from . import base85
from .canonical import sha256_hex
from .errors import CorruptBlobError, DecompressionBombError
from .pointers import DEFLATE, INLINE_KIND, TAG, InlineRef

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any

DEFLATE_LEVEL = 6
_WBITS = -15  # a raw deflate stream: no header or checksum, the digest checks it
_BLOCK = 64 * 1024
_FIRST_BLOCK = 16 * 1024
# A value this many times the limit first gets a look at level 1, which costs under half of
# level 6 on its first block (0.2 against 0.4 ms on a conversation): a large value is almost
# always far too large, and that look is all it then costs before it goes to a pack.
_LOOK_FIRST_OVER = 32
_LOOK_LEVEL = 1


def encode_inline(raw: bytes, digest: str | None = None, *, limit: int | None = None) -> InlineRef | None:
    """The inline frame of ``raw`` (value JSON bytes); None as soon as the compressed bytes
    pass ``limit``, so a value far too large for a payload costs only its first blocks."""
    if limit is not None and len(raw) > _LOOK_FIRST_OVER * limit and _far_over(raw, limit):
        return None
    compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, _WBITS)
    parts, size, start = [], 0, 0
    while start < len(raw):
        # A small first block, then larger ones.
        end = start + (_BLOCK if start else _FIRST_BLOCK)
        part = compressor.compress(raw[start:end])
        if limit is not None and end < len(raw):
            # Deflate holds back what it has not emitted yet; a sync flush (5 bytes, the
            # window kept) makes the size so far exact.
            part += compressor.flush(zlib.Z_SYNC_FLUSH)
        parts.append(part)
        size += len(part)
        start = end
        if limit is not None and (
            size * 5 // 4 > limit
            # Given up on early when, at the rate so far, the frame would be more than four times
            # over: a value far too large for the payload costs one small block, not most of
            # its bytes (one that would compress far better further on goes to a pack instead).
            or size * 5 // 4 * len(raw) // min(start, len(raw)) > 4 * limit
        ):
            return None
    parts.append(compressor.flush())
    packed = b"".join(parts)
    if limit is not None and len(packed) * 5 // 4 > limit:
        return None
    return InlineRef(digest or sha256_hex(raw), len(raw), DEFLATE, base85.encode(packed).decode("ascii"))


def _far_over(raw: bytes, limit: int) -> bool:
    """Whether, at level 1's rate on the first block, the frame would be more than five times
    over ``limit``: encode_inline's give-up rule (four times, at level 6), with a quarter more for
    level 1's larger output. A value that passes takes the regular path, which decides."""
    look = zlib.compressobj(_LOOK_LEVEL, zlib.DEFLATED, _WBITS)
    size = len(look.compress(raw[:_FIRST_BLOCK])) + len(look.flush(zlib.Z_SYNC_FLUSH))
    return size * 5 // 4 * len(raw) // min(_FIRST_BLOCK, len(raw)) > 5 * limit


def encoded_size(ref: InlineRef) -> int:
    """Bytes the frame adds to a payload, pointer included."""
    return len(ref.frame) + 140


def decode_inline(ref: InlineRef, max_bytes: int) -> bytes:
    """The checked raw bytes of an inline frame; a typed error for anything off."""
    if ref.raw_size > max_bytes:
        raise DecompressionBombError(f"inline frame declares {ref.raw_size} bytes, over {max_bytes}")
    try:
        packed = base85.decode(ref.frame.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise CorruptBlobError(f"inline frame is not base85: {exc}") from exc
    inflater = zlib.decompressobj(_WBITS)
    try:
        raw = inflater.decompress(packed, ref.raw_size + 1)
    except zlib.error as exc:
        raise CorruptBlobError(f"inline frame is corrupt: {exc}") from exc
    if len(raw) > ref.raw_size:
        raise DecompressionBombError(f"inline frame expands past its recorded size of {ref.raw_size} bytes")
    if len(raw) != ref.raw_size or not inflater.eof:
        raise CorruptBlobError(f"inline frame holds {len(raw)} bytes, expected {ref.raw_size}")
    if sha256_hex(raw) != ref.digest:
        raise CorruptBlobError(f"inline frame {ref.digest[:12]} fails its digest check")
    return raw


def hashed_form(entry: Any) -> Any:
    """An entry as a manifest hash covers it: an inline frame without its bytes."""
    if isinstance(entry, dict) and entry.get(TAG) == INLINE_KIND:
        return {name: value for name, value in entry.items() if name != "b"}
    return entry
