"""The distinct-unit sketch, against the wire format's definition: registers as the spec computes
them, estimates within three standard errors, merge as union."""

from __future__ import annotations

import hashlib
import random

import pytest

from analemma_sdk.telemetry.hll import M, Sketch, position
from analemma_sdk.telemetry.recorder import Recorder

STANDARD_ERROR = 1.04 / M**0.5  # 6.5 %


def spec_cell(unit: str) -> tuple[int, int]:
    """(register, rank) exactly as WIRE.md words it, with plain integers."""
    h = int.from_bytes(hashlib.sha256(unit.encode()).digest()[:8], "big")
    index = h >> 56
    rest = (h << 8) & (2**64 - 1)
    leading = 64 if rest == 0 else 64 - rest.bit_length()
    return index, min(leading + 1, 57)


def ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"exec-{rng.getrandbits(64):016x}" for _ in range(count)]


def test_position__matches_the_wire_definition():
    for unit in ids(2000, seed=1) + ["", "é-ünït", "exec-00000001"]:
        index, rank = spec_cell(unit)
        assert position(unit) == index << 8 | rank


def test_update__bulk__same_registers_as_one_by_one():
    units = ids(5000, seed=2)
    one_by_one = Sketch()
    for unit in units:
        one_by_one.add(unit)
    assert Sketch().update(units) == one_by_one
    reference = bytearray(M)
    for unit in units:
        index, rank = spec_cell(unit)
        reference[index] = max(reference[index], rank)
    assert one_by_one.registers == reference


@pytest.mark.parametrize("count", [1_000, 100_000])
@pytest.mark.parametrize("seed", [7, 8])
def test_estimate__distinct_ids__within_three_standard_errors(count, seed):
    sketch = Sketch().update(ids(count, seed))
    assert abs(sketch.estimate() - count) <= 3 * STANDARD_ERROR * count


def test_estimate__small_and_empty__linear_counting_is_close():
    assert Sketch().estimate() == 0
    assert Sketch().update(["only"]).estimate() == pytest.approx(1, abs=0.01)
    assert Sketch().update(ids(20, seed=3)).estimate() == pytest.approx(20, abs=2)


def test_merge__two_sketches__equals_the_sketch_of_the_union():
    a_ids, b_ids = ids(30_000, seed=4), ids(30_000, seed=5)
    shared = a_ids[:10_000]
    a = Sketch().update(a_ids)
    b = Sketch().update(b_ids + shared)  # 10,000 of a's ids counted in b too
    union = Sketch().update(a_ids + b_ids)
    assert Sketch(a.registers).merge(b) == union
    assert Sketch(b.registers).merge(a.registers) == union  # commutative, bytes accepted
    assert abs(union.estimate() - 60_000) <= 3 * STANDARD_ERROR * 60_000


def test_base64__round_trip_and_refuses_what_is_not_a_sketch():
    sketch = Sketch().update(ids(500, seed=6))
    text = sketch.to_base64()
    assert len(text) == 344 and Sketch.from_base64(text) == sketch
    with pytest.raises(ValueError):
        Sketch.from_base64("AAAA")
    with pytest.raises(ValueError):
        Sketch(b"\x00" * 10)


def test_recorder__units_over_many_folds__one_sketch_per_key():
    # Given more evaluations than one log holds, with units repeated across folds
    recorder = Recorder(fold_at=256)
    units = ids(3000, seed=9)
    for unit in units + units[:1000]:
        recorder.evaluation("flag_a", None, True, "rollout", unit)
    recorder.evaluation("flag_a", "1", "b", "rollout", units[0])
    body = recorder.snapshot_and_reset()
    # Then the counts are exact and the sketch holds each unit once
    by_variant = {item["variant"]: item for item in body["evaluations"]}
    assert by_variant[None]["count"] == 4000 and by_variant["1"]["count"] == 1
    assert Sketch.from_base64(by_variant[None]["units"]) == Sketch().update(units)
