"""Deterministic bucketing, shared by the server and the SDK (one implementation).

Compatible with LaunchDarkly's, so cohorts survive a migration from it:

    bucket_value(flag_key, salt, unit) = int(sha1(f"{flag_key}.{salt}.{unit}")[:15 hex], 16) / 0xFFFFFFFFFFFFFFF

or ``sha1(f"{seed}.{unit}")`` when the flag has a seed (flags sharing a seed bucket together
on purpose). The value lies in [0, 1).

* Percentage rollout: a unit is in when ``bucket_value < percentage / 100``. Ramping the
  percentage up keeps everyone who was in.
* Variants take consecutive ranges of cumulative weight, in list order; changing weights
  moves only the units whose value falls between the old and the new boundaries.

Standard library only; pinned by tests/data/bucketing_vectors.json.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "TOTAL_WEIGHT",
    "bucket_hash",
    "bucket_hashes",
    "bucket_value",
    "in_rollout",
    "sha1",
    "sketch_add",
    "variant_index",
]

try:  # the interpreter's own sha1 loads in a fraction of the time OpenSSL's does (cold starts)
    from _sha1 import sha1
except ImportError:  # pragma: no cover - builds without it
    from hashlib import sha1

_LONG_SCALE = float(0xFFFFFFFFFFFFFFF)
TOTAL_WEIGHT = 100_000  # variant weights are in thousandths of a percent, as LaunchDarkly's


def bucket_value(flag_key: str, salt: str, unit: str, seed: int | None = None) -> float:
    """Where ``unit`` falls for this flag, in [0, 1)."""
    return bucket_hash(flag_key, salt, unit, seed) / _LONG_SCALE


def bucket_hash(flag_key: str, salt: str, unit: str, seed: int | None = None) -> int:
    """The 60-bit integer ``bucket_value`` scales to [0, 1): the first 15 hex digits of the
    sha1. Telemetry's distinct-unit sketch takes its register and rank from it, so a unit the
    evaluation has bucketed costs the sketch no hash of its own."""
    text = f"{seed}.{unit}" if seed is not None else f"{flag_key}.{salt}.{unit}"
    return int(sha1(text.encode("utf-8")).hexdigest()[:15], 16)


def bucket_hashes(texts: Iterable[str]) -> list[int]:
    """``bucket_hash`` of many bucketing texts (``f"{flag_key}.{salt}.{unit}"`` or
    ``f"{seed}.{unit}"``), the loops in C. A lone surrogate, which bucketing refuses, is hashed
    as its UTF-8 bytes rather than lost."""
    from itertools import repeat  # builtin modules
    from operator import itemgetter, methodcaller

    encoded = map(methodcaller("encode", "utf-8", "surrogatepass"), texts)
    digests = map(methodcaller("hexdigest"), map(sha1, encoded))
    return list(map(int, map(itemgetter(slice(0, 15)), digests), repeat(16)))


def sketch_add(registers: bytearray, hashes: Iterable[int]) -> None:
    """Add units by their bucketing hashes to the 256 registers of a distinct-unit sketch
    (telemetry, version 2): register ``h & 255``; rank = the trailing zeros of ``h >> 8``, plus
    one (1 to 52; 0 when those 52 bits are all zero, once in 2**52: not counted). Low bits,
    because the outcome a unit gets is decided by the high ones: within one outcome, the high
    bits are far from uniform, the low ones are not."""
    for h in hashes:
        rest = h >> 8
        rank = (rest & -rest).bit_length()
        if rank > registers[h & 255]:
            registers[h & 255] = rank


def in_rollout(value: float, percentage: float) -> bool:
    """True when a unit at ``value`` is inside a ``percentage`` (0-100) rollout."""
    return value < percentage / 100.0


def variant_index(value: float, weights: Sequence[int]) -> int:
    """Index of the variant whose cumulative-weight range holds ``value``. Weights are out of
    TOTAL_WEIGHT; a value past the last range (weights summing short) lands in the last one."""
    if not weights:
        raise ValueError("no variants")
    target = value * TOTAL_WEIGHT
    cumulative = 0
    for index, weight in enumerate(weights):
        if weight < 0:
            raise ValueError("variant weights must not be negative")
        cumulative += weight
        if target < cumulative:
            return index
    return len(weights) - 1
