"""Distinct units as a HyperLogLog sketch, and latency as log2 histograms: the two summaries
the telemetry wire format carries (docs/telemetry-wire.md), merged and read here. Standard library
only, the SDK's definition to the bit:

* a sketch is 256 one-byte registers (p = 8), each keeping the largest rank seen; merging is
  the element-wise max; the estimate's standard error is 1.04 / sqrt(256), about 6.5 %. Two
  hash versions exist, told apart by their length on the wire and in storage:

  - version 1 (SDKs before 0.2): the 256 registers alone. For a unit id u: h = the first 8
    bytes of sha256(u), big-endian; register h >> 56, rank = leading zeros of the other 56
    bits + 1, at most 57.
  - version 2: a version byte (2), then the 256 registers. h = the unit's 60-bit bucketing
    hash for the flag (``analemma_sdk.bucketing.bucket_hash``, which the evaluation computes
    anyway); register h & 255, rank = trailing zeros of h >> 8, plus one (at most 52).

  The two hash a unit differently, so they are never merged together: a merge keeps one
  sketch per version (stored as each version's byte then its registers, 257 bytes a version;
  a lone version-1 sketch stays its bare 256 registers, as rows written before version 2
  hold them). An estimate reads the newest version present and leaves the older out: a range
  where SDKs of both versions reported counts the units the upgraded ones saw (mixing them
  would count a unit both saw twice). Old rows and old SDKs alone still give estimates.
* a histogram maps an upper bound in ms (a power of two, 1 ... 65536) to a count of values at
  most that bound (the first bucket also holds everything under 1 ms); merging sums counts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

P = 8
REGISTERS = 1 << P
MAX_RANK = 64 - P + 1  # version 1
V1, V2 = 1, 2
MAX_RANKS = {V1: MAX_RANK, V2: 52}
STANDARD_ERROR = 1.04 / math.sqrt(REGISTERS)
_MASK64 = (1 << 64) - 1
_ALPHA = 0.7213 / (1 + 1.079 / REGISTERS)
HISTOGRAM_BOUNDS = tuple(1 << power for power in range(17))  # 1 ms ... 65536 ms


def sketch_empty() -> bytearray:
    return bytearray(REGISTERS)


def sketch_add(registers: bytearray, unit: str) -> None:
    h = int.from_bytes(hashlib.sha256(unit.encode()).digest()[:8], "big")
    rest = (h << P) & _MASK64
    rank = min(64 - rest.bit_length() + 1, MAX_RANK)
    index = h >> (64 - P)
    if rank > registers[index]:
        registers[index] = rank


def sketch_versions(sketch: bytes) -> dict[int, bytes]:
    """The registers per hash version a stored or sent sketch holds (see above); ValueError
    when it is not one."""
    if len(sketch) == REGISTERS:
        return {V1: bytes(sketch)}
    width = REGISTERS + 1
    if not sketch or len(sketch) % width:
        raise ValueError(f"a sketch is {REGISTERS} registers or versioned parts of {width} bytes")
    parts = {}
    for start in range(0, len(sketch), width):
        version = sketch[start]
        if version not in MAX_RANKS or version in parts:
            raise ValueError(f"unknown or repeated sketch version {version}")
        parts[version] = bytes(sketch[start + 1 : start + width])
    return parts


def sketch_join(parts: Mapping[int, bytes]) -> bytes:
    """The stored form of one sketch per version (``sketch_versions`` reads it back)."""
    if set(parts) == {V1}:
        return bytes(parts[V1])
    return b"".join(bytes((version,)) + bytes(parts[version]) for version in sorted(parts))


def sketch_merge(sketches: Iterable[bytes]) -> bytes:
    """The element-wise max of any number of sketches, per hash version (an empty version-1
    sketch for none)."""
    columns: dict[int, list[bytes]] = {}
    for sketch in sketches:
        for version, registers in sketch_versions(sketch).items():
            columns.setdefault(version, []).append(registers)
    if not columns:
        return bytes(REGISTERS)
    return sketch_join(
        {
            version: parts[0] if len(parts) == 1 else bytes(map(max, *parts))
            for version, parts in columns.items()
        }
    )


def sketch_estimate(sketch: bytes) -> float:
    """The number of distinct units the sketch saw (standard HLL, linear counting when small),
    from its newest hash version."""
    parts = sketch_versions(sketch)
    registers = parts[max(parts)]
    zeros = registers.count(0)
    raw = _ALPHA * REGISTERS * REGISTERS / math.fsum(2.0**-rank for rank in registers)
    if raw <= 2.5 * REGISTERS and zeros:
        return REGISTERS * math.log(REGISTERS / zeros)
    return raw


def histogram_merge(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for histogram in histograms:
        for bound, count in histogram.items():
            merged[bound] = merged.get(bound, 0) + count
    return merged


def histogram_quantile(histogram: Mapping[int, int], quantile: float) -> int | None:
    """The upper bound of the bucket holding the ``quantile`` (0-1] of the values: the value
    is at most that many ms. None for an empty histogram."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(quantile * total))
    seen = 0
    for bound in sorted(histogram):
        seen += histogram[bound]
        if seen >= rank:
            return bound
    return max(histogram)
