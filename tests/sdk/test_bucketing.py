import subprocess
import sys

import pytest

from analemma_sdk import bucketing
from analemma_sdk.bucketing import bucket_value, in_rollout, variant_index

from ..bucketing_vectors import assert_matches_vectors

UNITS = [f"exec-{i}" for i in range(20_000)]


def test_bucketing__pinned_vectors__match():
    assert_matches_vectors(bucketing)


@pytest.mark.parametrize(
    "unit, seed, expected",
    [
        ("userKeyA", None, 0.42157587),
        ("userKeyB", None, 0.6708485),
        ("userKeyC", None, 0.10343106),
        ("userKeyA", 61, 0.09801207),
        ("userKeyB", 61, 0.14483777),
        ("userKeyC", 61, 0.9242641),
    ],
)
def test_bucket_value__launchdarkly_published_values__reproduced(unit, seed, expected):
    assert bucket_value("hashKey", "saltyA", unit, seed) == pytest.approx(expected, abs=1e-8)


def test_in_rollout__ramp_up__keeps_everyone_already_in():
    values = [bucket_value("use_zstd", "s", unit) for unit in UNITS]
    previous: set[int] = set()
    for percentage in (0, 0.5, 5, 25, 50, 99.99, 100):
        members = {i for i, v in enumerate(values) if in_rollout(v, percentage)}
        assert previous <= members
        assert abs(len(members) / len(UNITS) - percentage / 100) < 0.015
        previous = members
    assert len(previous) == len(UNITS)


def test_variant_index__reweighting__moves_only_units_between_boundaries():
    values = [bucket_value("checkout", "s", unit) for unit in UNITS]
    before = [variant_index(v, [50_000, 50_000]) for v in values]
    after = [variant_index(v, [60_000, 40_000]) for v in values]
    moved = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert all(before[i] == 1 and after[i] == 0 and 0.5 <= values[i] < 0.6 for i in moved)
    assert abs(len(moved) / len(UNITS) - 0.10) < 0.015


def test_bucket_value__different_flags__independent():
    a = [in_rollout(bucket_value("use_zstd", "", u), 50) for u in UNITS]
    b = [in_rollout(bucket_value("use_2pc", "", u), 50) for u in UNITS]
    both = sum(x and y for x, y in zip(a, b, strict=True)) / len(UNITS)
    assert abs(both - 0.25) < 0.015  # independent halves overlap on a quarter


def test_variant_index__bad_weights__typed_error():
    with pytest.raises(ValueError):
        variant_index(0.5, [])
    with pytest.raises(ValueError):
        variant_index(0.5, [-1, 100_001])


def test_import__bucketing__standard_library_only():
    code = "import sys, analemma_sdk.bucketing; print(sorted(m for m in ('django','celery','boto3','zstandard','orjson') if m in sys.modules))"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "[]"
    )
