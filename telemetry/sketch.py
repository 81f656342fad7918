"""Distinct units as a HyperLogLog sketch, and latency as log2 histograms: the two summaries
the telemetry wire format carries (/tmp/tele/WIRE.md), merged and read here. Standard library
only, the SDK's definition to the bit:

* a sketch is 256 one-byte registers (p = 8). For a unit id u: h = the first 8 bytes of
  sha256(u) as a big-endian unsigned int; register h >> 56 keeps the largest rank seen, rank =
  leading zeros of the other 56 bits (shifted to the top of 64) + 1, at most 57. Merging is
  the element-wise max; the estimate's standard error is 1.04 / sqrt(256), about 6.5 %.
* a histogram maps an upper bound in ms (a power of two, 1 ... 65536) to a count of values at
  most that bound (the first bucket also holds everything under 1 ms); merging sums counts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

P = 8
REGISTERS = 1 << P
MAX_RANK = 64 - P + 1
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


def sketch_merge(sketches: Iterable[bytes]) -> bytes:
    """The element-wise max of any number of sketches (an empty sketch for none)."""
    columns = list(sketches)
    if not columns:
        return bytes(REGISTERS)
    if len(columns) == 1:
        return bytes(columns[0])
    return bytes(map(max, *columns))


def sketch_estimate(registers: bytes) -> float:
    """The number of distinct units the sketch saw (standard HLL, linear counting when small)."""
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
