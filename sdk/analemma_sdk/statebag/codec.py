"""Frame codecs: zstd (optionally with a trained dictionary), gzip, raw.

zstandard is imported on first use: a hydrator that only reads inline frames never loads it
(building one only asks the import system whether zstandard is there). When it is missing,
compression falls back to gzip with one warning (the original system's safe fallback); reading a
zstd frame without it raises CodecUnavailableError rather than returning wrong data.

Decompression is always bounded by the size recorded for the frame: output is read in a
stream and stops one byte past that size, so a bomb costs at most that much memory.
"""

from __future__ import annotations

import sys
import zlib

from .._record import Record
from ..flags.spec import ZSTD_LEVEL_DEFAULT, ZSTD_LEVEL_MAX, ZSTD_LEVEL_MIN
from . import metrics
from .canonical import sha256_hex
from .errors import (
    CodecUnavailableError,
    CorruptBlobError,
    DecompressionBombError,
)
from .keys import validate_id

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any

RAW = "raw"
GZIP = "gzip"
ZSTD = "zstd"
CODECS = frozenset({RAW, GZIP, ZSTD})

# The level's bounds are the flag's (the service refuses a zstd_level flag outside them).
MIN_ZSTD_LEVEL = ZSTD_LEVEL_MIN
MAX_ZSTD_LEVEL = ZSTD_LEVEL_MAX
DEFAULT_ZSTD_LEVEL = ZSTD_LEVEL_DEFAULT
GZIP_LEVEL = 6
# Values below this many bytes gain nothing from compression and are stored raw; a trained
# dictionary makes even short values worth compressing.
TINY_BYTES = 128
TINY_BYTES_WITH_DICTIONARY = 24

_zstd: Any = None
_zstd_state = "unchecked"  # unchecked | present | missing
_warned_fallback = False


def load_zstandard() -> Any | None:
    """Import zstandard once; None when it is not installed."""
    global _zstd, _zstd_state
    if _zstd_state == "unchecked":
        try:
            import zstandard

            _zstd, _zstd_state = zstandard, "present"
        except ImportError:
            _zstd, _zstd_state = None, "missing"
    return _zstd


def zstandard_installed() -> bool:
    """Whether zstandard can be imported, without importing it (tens of milliseconds of a cold
    start, and a hydrator that only reads inline frames never needs it)."""
    if "zstandard" in sys.modules:  # imported already, or blocked (None) as if not installed
        return sys.modules["zstandard"] is not None
    if _zstd_state != "unchecked":
        return _zstd_state == "present"
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is not None and find_spec("zstandard", None) is not None:
            return True
    return False


def _require_zstandard() -> Any:
    module = load_zstandard()
    if module is None:
        raise CodecUnavailableError("this frame is zstd-compressed but zstandard is not installed")
    return module


def validate_level(level: int) -> int:
    if not isinstance(level, int) or isinstance(level, bool):
        raise ValueError(f"zstd level must be an integer, got {level!r}")
    if not MIN_ZSTD_LEVEL <= level <= MAX_ZSTD_LEVEL:
        raise ValueError(f"zstd level must be {MIN_ZSTD_LEVEL}-{MAX_ZSTD_LEVEL}, got {level}")
    return level


class ZstdDictionary(Record, frozen=True):
    """A trained zstd dictionary, addressed by the digest of its bytes.

    ``owner_id`` is the tenant it was trained for: a hydrator compresses only that owner's
    values with it and stores it under that owner's prefix, and frames of other owners never
    resolve to it. A hydrator refuses a dictionary that names no owner."""

    data: bytes
    dict_id: str = ""
    owner_id: str = ""

    def __post_init__(self) -> None:
        if not self.dict_id:
            object.__setattr__(self, "dict_id", sha256_hex(self.data)[:32])
        if self.owner_id:
            validate_id("owner id", self.owner_id)

    def for_owner(self, owner_id: str) -> ZstdDictionary:
        """The same dictionary, bound to ``owner_id``."""
        return ZstdDictionary(self.data, self.dict_id, owner_id)

    def _zstd_dict(self) -> Any:
        cached = getattr(self, "_compiled", None)
        if cached is None:
            cached = _require_zstandard().ZstdCompressionDict(self.data)
            object.__setattr__(self, "_compiled", cached)
        return cached


def train_dictionary(samples: list[bytes], size: int = 110 * 1024, *, owner_id: str = "") -> ZstdDictionary:
    """Train a zstd dictionary from sample blobs (e.g. recent blobs of one owner's workflow
    type). The samples must all be ``owner_id``'s: a dictionary holds pieces of them."""
    zstandard = _require_zstandard()
    trained = zstandard.train_dictionary(size, samples)
    return ZstdDictionary(trained.as_bytes(), owner_id=owner_id)


class Encoded(Record, frozen=True):
    codec: str
    data: bytes
    dict_id: str | None = None


class Compressor:
    """Compresses frames with one configuration; reusable, not thread-safe."""

    def __init__(
        self,
        codec: str = ZSTD,
        zstd_level: int = DEFAULT_ZSTD_LEVEL,
        dictionary: ZstdDictionary | None = None,
    ) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}")
        self.zstd_level = validate_level(zstd_level)
        self.dictionary = dictionary
        self.codec = codec
        self._zstd_compressor: Any = None
        if codec == ZSTD and not zstandard_installed():
            _warn_fallback_once()
            self.codec = GZIP

    def encode(self, raw: bytes) -> Encoded:
        tiny = TINY_BYTES_WITH_DICTIONARY if self.dictionary is not None else TINY_BYTES
        if self.codec == RAW or len(raw) < tiny:
            return Encoded(RAW, raw)
        if self.codec == ZSTD and self._zstd_compressor is None and load_zstandard() is None:
            _warn_fallback_once()  # installed, yet it would not import
            self.codec = GZIP
        if self.codec == GZIP:
            import gzip  # only on the gzip path

            packed = gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0)
            return Encoded(GZIP, packed) if len(packed) < len(raw) else Encoded(RAW, raw)
        compressor = self._zstd()
        packed = compressor.compress(raw)
        if len(packed) >= len(raw):
            return Encoded(RAW, raw)
        dict_id = self.dictionary.dict_id if self.dictionary else None
        return Encoded(ZSTD, packed, dict_id)

    def _zstd(self) -> Any:
        if self._zstd_compressor is None:
            zstandard = _require_zstandard()
            kwargs: dict[str, Any] = {"level": self.zstd_level, "write_content_size": True}
            if self.dictionary is not None:
                kwargs["dict_data"] = self.dictionary._zstd_dict()
            self._zstd_compressor = zstandard.ZstdCompressor(**kwargs)
        return self._zstd_compressor


def _warn_fallback_once() -> None:
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        metrics.logger().warning("zstandard is not installed: compressing with gzip instead")


def decode(
    codec: str,
    frame: bytes,
    raw_size: int,
    dictionary: ZstdDictionary | None = None,
) -> bytes:
    """Decompress one frame to exactly ``raw_size`` bytes or raise a typed error."""
    if codec == RAW:
        out = frame
    elif codec == GZIP:
        out = _bounded_gzip(frame, raw_size)
    elif codec == ZSTD:
        out = _bounded_zstd(frame, raw_size, dictionary)
    else:
        raise CorruptBlobError(f"unknown codec {codec!r}")
    if len(out) != raw_size:
        if len(out) > raw_size:
            raise DecompressionBombError(f"frame expands past its recorded size of {raw_size} bytes")
        raise CorruptBlobError(f"frame holds {len(out)} bytes, expected {raw_size}")
    return out


def _bounded_gzip(frame: bytes, raw_size: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(frame, raw_size + 1)
    except zlib.error as exc:
        raise CorruptBlobError(f"gzip frame is corrupt: {exc}") from exc
    if len(out) <= raw_size and not inflater.eof:
        raise CorruptBlobError("gzip frame is truncated")
    return out


def _bounded_zstd(frame: bytes, raw_size: int, dictionary: ZstdDictionary | None) -> bytes:
    zstandard = _require_zstandard()
    kwargs: dict[str, Any] = {}
    if dictionary is not None:
        kwargs["dict_data"] = dictionary._zstd_dict()
    decompressor = zstandard.ZstdDecompressor(**kwargs)
    try:
        # A stream read never allocates more than asked for, whatever the frame header claims.
        reader = decompressor.stream_reader(frame, read_across_frames=False)
        parts: list[bytes] = []
        wanted = raw_size + 1
        while wanted > 0:
            chunk = reader.read(wanted)
            if not chunk:
                break
            parts.append(chunk)
            wanted -= len(chunk)
        out = b"".join(parts)
    except zstandard.ZstdError as exc:
        raise CorruptBlobError(f"zstd frame is corrupt: {exc}") from exc
    return out
