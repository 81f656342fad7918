"""The sketch and histograms the wire format carries: the SDK's definition to the bit, merges
that count a unit once, and estimates within the stated error."""

from __future__ import annotations

import base64
import math

import pytest

from telemetry.sketch import (
    REGISTERS,
    STANDARD_ERROR,
    histogram_merge,
    histogram_quantile,
    sketch_add,
    sketch_empty,
    sketch_estimate,
    sketch_merge,
    sketch_versions,
)


def sketch_of(units):
    registers = sketch_empty()
    for unit in units:
        sketch_add(registers, unit)
    return bytes(registers)


def test_sketch_add__pinned_registers__as_the_wire_format_defines():
    # sha256("exec-1")[:8] computed by hand from the contract's definition
    import hashlib

    h = int.from_bytes(hashlib.sha256(b"exec-1").digest()[:8], "big")
    rest = (h << 8) & (2**64 - 1)
    rank = min(64 - rest.bit_length() + 1, 57)
    registers = sketch_of(["exec-1"])
    assert registers[h >> 56] == rank
    assert sum(1 for r in registers if r) == 1


def v2_sketch_of(texts):
    """A version-2 sketch as the wire defines it: register h & 255, rank = trailing zeros of
    h >> 8 plus one, h = the first 15 hex digits of sha1 of the bucketing text."""
    import hashlib

    registers = bytearray(REGISTERS)
    for text in texts:
        h = int(hashlib.sha1(text.encode()).hexdigest()[:15], 16)
        rest = h >> 8
        rank = (rest & -rest).bit_length()
        registers[h & 255] = max(registers[h & 255], rank)
    return b"\x02" + bytes(registers)


def test_sketch__version_2__same_registers_as_the_sdk():
    hll = pytest.importorskip("analemma_sdk.telemetry.hll")
    texts = [f"use_zstd..exec-{i}" for i in range(3000)]
    theirs = hll.Sketch().update(texts)
    assert base64.b64decode(theirs.to_base64()) == v2_sketch_of(texts)
    assert sketch_estimate(v2_sketch_of(texts)) == pytest.approx(theirs.estimate())
    assert abs(theirs.estimate() - 3000) <= 3 * STANDARD_ERROR * 3000


def test_sketch_merge__two_versions__kept_apart_and_estimated_from_the_newest():
    # Given an old SDK's sketch of 0-1999 and a new SDK's of 1000-2999 and 2000-3999
    old = sketch_of(f"u{i}" for i in range(2000))
    new_a = v2_sketch_of(f"use_zstd..u{i}" for i in range(1000, 3000))
    new_b = v2_sketch_of(f"use_zstd..u{i}" for i in range(2000, 4000))
    # When they are merged, in any order and in steps (a rollup row merged again later)
    merged = sketch_merge([new_a, old, new_b])
    assert sketch_merge([sketch_merge([old, new_a]), new_b]) == merged
    # Then each version is merged with its own kind only
    parts = sketch_versions(merged)
    assert parts == {1: old, 2: v2_sketch_of(f"use_zstd..u{i}" for i in range(1000, 4000))[1:]}
    assert len(merged) == 2 * (REGISTERS + 1)
    # And the estimate counts the newest version's units: 3,000, not 2,000 + 3,000 or more
    assert abs(sketch_estimate(merged) - 3000) <= 3 * STANDARD_ERROR * 3000
    # While version 1 alone stays as rows before version 2 hold it, and still estimates
    assert sketch_merge([old, old]) == old and abs(sketch_estimate(old) - 2000) <= 3 * STANDARD_ERROR * 2000
    for broken in (b"", bytes(100), b"\x09" + bytes(REGISTERS), 2 * (b"\x02" + bytes(REGISTERS))):
        with pytest.raises(ValueError):
            sketch_versions(broken)


@pytest.mark.parametrize("distinct", [0, 1, 10, 200, 1000, 20_000])
def test_sketch_estimate__distinct_units__within_three_standard_errors(distinct):
    estimate = sketch_estimate(sketch_of(f"unit-{i}" for i in range(distinct)))
    assert abs(estimate - distinct) <= max(1.0, 3 * STANDARD_ERROR * distinct)


def test_sketch_merge__overlapping_batches__each_unit_counted_once():
    # Given 20 batches of 1,000 units each, every unit in two batches
    batches = [sketch_of(f"u{(b * 500 + i) % 10_000}" for i in range(1000)) for b in range(20)]
    merged = sketch_merge(batches)
    # Then the merge is the sketch of the union, and estimates 10,000 within the error
    assert merged == sketch_of(f"u{i}" for i in range(10_000))
    assert abs(sketch_estimate(merged) - 10_000) <= 3 * STANDARD_ERROR * 10_000
    assert sketch_merge([]) == bytes(REGISTERS)
    assert sketch_merge([merged]) == merged


def test_histogram_quantile__log2_buckets__upper_bound_of_the_quantiles_bucket():
    histogram = histogram_merge([{1: 3, 2: 5, 4: 2}, {4: 5, 64: 5}])
    assert histogram == {1: 3, 2: 5, 4: 7, 64: 5}
    assert histogram_quantile(histogram, 0.5) == 4  # the 10th of 20 values
    assert histogram_quantile(histogram, 0.95) == 64
    assert histogram_quantile(histogram, 0.15) == 1
    assert histogram_quantile({}, 0.5) is None


def test_standard_error__as_documented():
    assert math.isclose(STANDARD_ERROR, 0.065, abs_tol=0.0005)
    assert len(base64.b64encode(bytes(REGISTERS))) == 344
