"""The guards' sequential test (telemetry.stats): looked at every minute it still fails a
harmless step at most α of the time, where a one-look z-test checked as often does far more;
it finds a real harm; its interval and its statistic agree; the assumed variances."""

from __future__ import annotations

import math
import random

import pytest

from telemetry.stats import ALPHA, Sample, compare

Z95 = 1.959963984540054
LOOKS = 60  # a step soaking an hour, checked every minute
PER_LOOK = 40  # executions per cohort per minute
SEQUENCES = 300


def binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def crossings(p_treatment: float, p_control: float, *, seed: int) -> tuple[float, float]:
    """Share of simulated steps the always-valid test fails (treatment worse at all, δ = 0),
    and the share a fixed 95 % z-test checked at every look would have failed."""
    rng = random.Random(seed)
    sequential = naive = 0
    for _ in range(SEQUENCES):
        t = c = n = 0
        hit_sequential = hit_naive = False
        for _ in range(LOOKS):
            n += PER_LOOK
            t += binomial(rng, PER_LOOK, p_treatment)
            c += binomial(rng, PER_LOOK, p_control)
            treated, control = Sample(n, t, "proportion"), Sample(n, c, "proportion")
            interval = compare(treated, control, threshold=0.0, min_sample=PER_LOOK)
            assert interval is not None
            hit_sequential |= interval.low > 0
            hit_naive |= interval.difference / interval.standard_error > Z95
        sequential += hit_sequential
        naive += hit_naive
    return sequential / SEQUENCES, naive / SEQUENCES


def test_no_harm__checked_every_minute__fails_at_most_alpha_where_a_z_test_would_not():
    sequential, naive = crossings(0.05, 0.05, seed=13)
    # α plus three Monte Carlo standard errors
    assert sequential <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / SEQUENCES)
    # The reason for a sequential test: the same data, judged each minute by a one-look test,
    # "finds" a harm that is not there far more often than 5 %.
    assert naive > 2 * ALPHA


def test_real_harm__found_within_the_hour_almost_always():
    sequential, _ = crossings(0.15, 0.05, seed=7)
    assert sequential > 0.95


def test_interval_and_statistic__one_decision():
    rng = random.Random(3)
    for _ in range(2000):
        n_t, n_c = rng.randint(1, 5000), rng.randint(1, 5000)
        treated = Sample(n_t, binomial(rng, 1, 1) * rng.randint(0, n_t), "proportion")
        control = Sample(n_c, rng.randint(0, n_c), "count")
        threshold = rng.uniform(-0.5, 0.5)
        interval = compare(treated, control, threshold=threshold, min_sample=rng.randint(1, 2000))
        assert interval is not None and interval.low <= interval.difference <= interval.high
        if abs(interval.low - threshold) > 1e-9 and abs(interval.high - threshold) > 1e-9:
            rejected = interval.statistic >= interval.boundary
            assert (interval.low > threshold) == (rejected and interval.difference > threshold)
            assert (interval.high < threshold) == (rejected and interval.difference < threshold)


def test_interval__wider_than_one_look_narrower_with_more_data():
    small = compare(Sample(500, 25, "proportion"), Sample(500, 25, "proportion"), threshold=0, min_sample=500)
    large = compare(
        Sample(50_000, 2500, "proportion"), Sample(50_000, 2500, "proportion"), threshold=0, min_sample=500
    )
    assert small is not None and large is not None
    half = (small.high - small.low) / 2
    assert half > Z95 * small.standard_error  # the price of looking every minute
    assert half < 4 * small.standard_error  # tuned for the minimum sample: not much more
    assert large.high - large.low < (small.high - small.low) / 5


def test_samples__assumed_variances():
    assert Sample(0, 0, "proportion").estimate is None
    assert compare(Sample(0, 0, "proportion"), Sample(10, 1, "proportion"), threshold=0, min_sample=1) is None
    no_event = Sample(1000, 0, "proportion")
    assert no_event.estimate == 0 and 0 < no_event.variance < 0.001  # shrunk, never zero
    assert Sample(1000, 500, "proportion").variance == pytest.approx(0.25, abs=1e-3)  # binomial
    assert Sample(1000, 3000, "count").variance == pytest.approx(3.0, abs=1e-2)  # Poisson: the mean
    assert Sample(1000, 3000, "proportion").variance == pytest.approx(3.0, abs=1e-2)  # several a unit
