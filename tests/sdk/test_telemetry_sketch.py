"""The distinct-unit sketch (version 2), against the wire format's definition: registers from
the unit's bucketing hash as the spec computes them, the same registers whether the evaluation
or a batch fills them, estimates within three standard errors per outcome, merge as union."""

from __future__ import annotations

import hashlib
import random

import pytest

from analemma_sdk.bucketing import bucket_hash, bucket_value
from analemma_sdk.flags.document import FlagSet
from analemma_sdk.flags.spec import flag_set_document, flag_spec
from analemma_sdk.flags.tally import PENDING_AT
from analemma_sdk.telemetry.hll import STANDARD_ERROR, M, Sketch
from analemma_sdk.telemetry.recorder import Recorder

FLAG, SALT = "new_checkout", "s1"


def spec_cell(text: str) -> tuple[int, int]:
    """(register, rank) exactly as the wire format words version 2, with plain integers."""
    h = int(hashlib.sha1(text.encode()).hexdigest()[:15], 16)
    rest = h >> 8
    trailing = 0
    while rest and not rest & 1:
        rest >>= 1
        trailing += 1
    return h & 255, (trailing + 1 if rest else 0)


def spec_registers(texts) -> bytearray:
    registers = bytearray(M)
    for text in texts:
        index, rank = spec_cell(text)
        registers[index] = max(registers[index], rank)
    return registers


def ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"exec-{rng.getrandbits(64):016x}" for _ in range(count)]


def flag_set(telemetry="units", **spec) -> FlagSet:
    spec = {"salt": SALT, "enabled": True, "value": True, **spec}
    flag = flag_spec("boolean", False, **spec)
    return FlagSet(flag_set_document("prod", 1, {FLAG: flag}), telemetry=telemetry)


def test_bucket_hash__is_what_bucket_value_scales():
    for unit in ids(200, seed=1):
        assert bucket_value(FLAG, SALT, unit) == bucket_hash(FLAG, SALT, unit) / float(0xFFFFFFFFFFFFFFF)


def test_sketch__bucketing_texts__registers_as_the_wire_defines():
    texts = [f"{FLAG}.{SALT}.{unit}" for unit in ids(5000, seed=2)] + [f"{FLAG}.{SALT}.é-ünït"]
    sketch = Sketch().update(texts)
    assert sketch.registers == spec_registers(texts)
    one_by_one = Sketch()
    for text in texts:
        one_by_one.add(text)
    assert one_by_one == sketch


@pytest.mark.parametrize(
    "spec",
    [
        {"percentage": 25},  # bucketed: the evaluation's own hash feeds the sketch
        {"percentage": 25, "seed": 7},
        {"variants": [{"value": True, "weight": 30_000}, {"value": False, "weight": 70_000}]},
        {"enabled": False},  # not bucketed: units hashed in bulk
        {"targets": [{"units": ["exec-1"], "value": False}]},
    ],
    ids=["rollout", "seeded", "variants", "off", "targets"],
)
def test_counted__every_path__same_registers_as_the_spec_per_outcome(spec):
    # Given a compiled flag counting units, evaluated over units seen twice
    flags = flag_set(**spec)
    flag = flags.flags[FLAG]
    units = ids(3 * PENDING_AT + 7, seed=3)
    served: dict[int, list[str]] = {}
    for unit in units + units[:100]:
        outcome = flag.counted(unit, None)
        assert outcome == flag.evaluate(unit, None)  # counting changes nothing served
        served.setdefault(id(outcome), []).append(unit)
    # Then each outcome's tally has its exact count and the spec's registers for its units
    prefix = f"{spec['seed']}." if "seed" in spec else f"{FLAG}.{SALT}."
    for tally in flag.tallies:
        count, registers = tally.take()
        mine = served.get(id(tally.outcome), [])
        assert count == len(mine)
        assert (registers or bytearray(M)) == spec_registers(prefix + unit for unit in mine)
        assert tally.take() == (0, None)  # taken: nothing left


@pytest.mark.parametrize("percentage", [1, 25, 50])
def test_counted__rollout__each_outcome_estimated_within_three_standard_errors(percentage):
    # The outcome is decided by the hash's high bits: the sketch's registers must not be
    flag = flag_set(percentage=percentage).flags[FLAG]
    units = ids(20_000, seed=percentage)
    for unit in units:
        flag.counted(unit, None)
    for tally in flag.tallies:
        count, registers = tally.take()
        if count:
            estimate = Sketch(registers).estimate()
            assert abs(estimate - count) <= 3 * STANDARD_ERROR * count, (tally.outcome, count, estimate)


def test_counts_only__no_registers():
    flag = flag_set(telemetry="counts", percentage=50).flags[FLAG]
    for unit in ids(300, seed=4):
        flag.counted(unit, None)
    taken = [tally.take() for tally in flag.tallies]
    assert sum(count for count, _ in taken) == 300
    assert all(registers is None for _, registers in taken)


def test_off__no_tallies():
    assert flag_set(telemetry=None).flags[FLAG].tallies == ()


def test_merge__two_sketches__equals_the_sketch_of_the_union():
    a_ids, b_ids = ids(30_000, seed=4), ids(30_000, seed=5)
    shared = a_ids[:10_000]
    a = Sketch().update(a_ids)
    b = Sketch().update(b_ids + shared)  # 10,000 of a's ids counted in b too
    union = Sketch().update(a_ids + b_ids)
    assert Sketch(a.registers).merge(b) == union
    assert Sketch(b.registers).merge(a.registers) == union  # commutative, bytes accepted
    assert abs(union.estimate() - 60_000) <= 3 * STANDARD_ERROR * 60_000


def test_base64__version_byte_round_trip_and_refuses_what_is_not_a_sketch():
    sketch = Sketch().update(ids(500, seed=6))
    text = sketch.to_base64()
    assert len(text) == 344 and Sketch.from_base64(text) == sketch
    import base64

    assert base64.b64decode(text)[0] == 2  # the version byte
    old = Sketch.from_base64(base64.b64encode(bytes(sketch.registers)).decode())  # an older SDK's
    assert old.version == 1 and old != sketch
    with pytest.raises(ValueError):
        sketch.merge(old)  # their registers mean different hashes
    with pytest.raises(ValueError):
        Sketch.from_base64("AAAA")
    with pytest.raises(ValueError):
        Sketch.from_base64(base64.b64encode(b"\x03" + bytes(M)).decode())
    with pytest.raises(ValueError):
        Sketch(b"\x00" * 10)


def test_recorder__logged_units_over_many_folds__one_sketch_per_key():
    # Given more logged evaluations than one log holds, with units repeated across folds
    recorder = Recorder(fold_at=256)
    units = ids(3000, seed=9)
    for unit in units + units[:1000]:
        recorder.evaluation("flag_a", None, True, "rollout", unit)
    recorder.evaluation("flag_a", "1", "b", "rollout", units[0])
    body = recorder.snapshot_and_reset()
    # Then the counts are exact and the sketch holds each unit once, hashed as a flag with
    # no salt buckets it
    by_variant = {item["variant"]: item for item in body["evaluations"]}
    assert by_variant[None]["count"] == 4000 and by_variant["1"]["count"] == 1
    assert Sketch.from_base64(by_variant[None]["units"]).registers == spec_registers(
        f"flag_a..{unit}" for unit in units
    )
