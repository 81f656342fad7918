"""Per-minute rollups by the periodic task: sums, merged sketches and histograms, late
batches merged into rows already written, retention, and the injectable clock."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat.models import PeriodicTask

from telemetry import selectors
from telemetry.models import CohortRollup, EvaluationRollup, IngestionMinute, RawBatch
from telemetry.services import telemetry_aggregate, telemetry_prune
from telemetry.sketch import STANDARD_ERROR
from telemetry.tasks import aggregate as aggregate_task

from .conftest import make_batch
from .test_sketch import sketch_of

pytestmark = pytest.mark.django_db


def units(names):
    return base64.b64encode(sketch_of(names)).decode()


def evaluation(count, value=True, variant=None, reason="rollout", names=None):
    entry = {"flag": "use_zstd", "variant": variant, "value": value, "reason": reason, "count": count}
    if names is not None:
        entry["units"] = units(names)
    return entry


def cohort_entry(on, executions, errors=0, hydrate=(), requests_get=0):
    return {
        "cohort": {"use_zstd": on, "use_2pc": True},
        "counters": {"executions": executions, "errors": errors, "requests_get": requests_get},
        "latency_ms": {"hydrate": [list(pair) for pair in hydrate]},
    }


def at(minute_offset=0):
    """A window ending inside the current minute minus ``minute_offset``."""
    end = (time.time() // 60) * 60 - 60 * minute_offset + 1
    return [end - 1, end]


def test_aggregate__batches_of_one_minute__evaluations_summed_and_units_merged(post, prod_key):
    # Given three batches: units 0-599, 300-899 and 600-1199 of the same value
    for start in (0, 300, 600):
        body = make_batch(
            window=at(),
            evaluations=[evaluation(600, names=[f"e{i}" for i in range(start, start + 600)])],
            statebag=[],
        )
        assert post(prod_key, body).status_code == 202
    # When the task runs
    result = telemetry_aggregate()
    # Then one rollup holds 1,800 evaluations and about 1,200 distinct units
    assert result.batches == 3
    row = EvaluationRollup.objects.get()
    assert (row.flag, row.value, row.variant, row.reason, row.evaluations) == (
        "use_zstd",
        "true",
        None,
        "rollout",
        1800,
    )
    [exposure] = selectors.exposures(
        environment="prod", flag="use_zstd", since=datetime.now(UTC) - timedelta(hours=1)
    )
    assert exposure.evaluations == 1800 and exposure.by_reason == {"rollout": 1800}
    assert abs(exposure.units - 1200) <= 3 * STANDARD_ERROR * 1200
    assert RawBatch.objects.filter(aggregated_at__isnull=True).count() == 0


def test_aggregate__values_variants_and_reasons__a_row_each_equal_values_merged(post, prod_key):
    post(
        prod_key,
        make_batch(
            window=at(),
            evaluations=[
                evaluation(5, value={"a": 1, "b": 2}, variant="x"),
                evaluation(7, value={"b": 2, "a": 1}, variant="x"),  # the same value, keys in another order
                evaluation(1, value={"a": 1, "b": 2}, variant="x", reason="targeted"),
                evaluation(2, value=False, variant=None, reason="default"),
            ],
            statebag=[],
        ),
    )
    telemetry_aggregate()
    found = selectors.exposures(
        environment="prod", flag="use_zstd", since=datetime.now(UTC) - timedelta(hours=1)
    )
    assert [(e.variant, e.value, e.evaluations, e.by_reason, e.units) for e in found] == [
        ("x", {"a": 1, "b": 2}, 13, {"rollout": 12, "targeted": 1}, None),
        (None, False, 2, {"default": 2}, None),
    ]
    assert EvaluationRollup.objects.count() == 3


def test_aggregate__late_batch_for_a_rolled_up_minute__merged_into_its_row(post, prod_key):
    post(prod_key, make_batch(window=at(2), evaluations=[evaluation(10, names=["a", "b"])], statebag=[]))
    telemetry_aggregate()
    post(prod_key, make_batch(window=at(2), evaluations=[evaluation(5, names=["b", "c"])], statebag=[]))
    telemetry_aggregate()
    row = EvaluationRollup.objects.get()
    assert row.evaluations == 15
    assert bytes(row.units) == sketch_of(["a", "b", "c"])


def test_aggregate__cohorts__counters_summed_histograms_merged_split_by_flag(post, prod_key):
    # Given treatment and control cohorts across two batches and two minutes
    post(
        prod_key,
        make_batch(
            window=at(1),
            evaluations=[],
            statebag=[
                cohort_entry(True, 10, errors=1, hydrate=[(1, 5), (8, 5)], requests_get=30),
                cohort_entry(False, 20, hydrate=[(1, 20)], requests_get=20),
            ],
        ),
    )
    post(
        prod_key,
        make_batch(
            window=at(0),
            evaluations=[],
            statebag=[
                cohort_entry(True, 10, errors=1, hydrate=[(8, 5), (64, 5)], requests_get=10),
            ],
        ),
    )
    telemetry_aggregate()
    assert CohortRollup.objects.count() == 3  # (treatment, control) x minute
    split = selectors.cohort_split(
        environment="prod", flag="use_zstd", since=datetime.now(UTC) - timedelta(hours=1)
    )
    treatment, control = split["true"], split["false"]
    assert treatment.counters == {"executions": 20, "errors": 2, "requests_get": 40}
    assert treatment.latency == {"hydrate": {1: 5, 8: 10, 64: 5}}
    assert (treatment.error_rate, treatment.requests_per_execution) == (0.1, 2.0)
    assert treatment.quantile("hydrate", 0.5) == 8 and treatment.quantile("hydrate", 0.95) == 64
    assert control.error_rate == 0 and control.quantile("hydrate", 0.95) == 1
    assert treatment.reports == 2 and control.reports == 1


def test_aggregate__ingestion_counts__batches_evaluations_and_dropped_per_minute(post, prod_key):
    post(prod_key, make_batch(window=at(), dropped=4, evaluations=[evaluation(3)]))
    post(prod_key, make_batch(window=at(), dropped=1, evaluations=[evaluation(2)]))
    telemetry_aggregate()
    row = IngestionMinute.objects.get(environment="prod")
    assert (row.batches, row.evaluations, row.dropped) == (2, 5, 5)


def test_aggregate__in_chunks__every_batch_once(post, prod_key):
    for _ in range(7):
        post(prod_key, make_batch(window=at(), evaluations=[evaluation(1)], statebag=[]))
    result = telemetry_aggregate(chunk=3)
    assert (result.batches, result.chunks) == (7, 3)
    assert telemetry_aggregate(chunk=3).batches == 0  # nothing twice
    assert EvaluationRollup.objects.get().evaluations == 7


def test_prune__injected_clock__raw_after_an_hour_rollups_after_90_days(post, prod_key, settings):
    # Given an aggregated batch and one not aggregated yet
    post(prod_key, make_batch(window=at()))
    telemetry_aggregate()
    post(prod_key, make_batch(window=at()))
    now = datetime.now(UTC)
    # An hour later only the aggregated raw batch goes; the rollups stay
    assert telemetry_prune(now=now + timedelta(minutes=59)).raw_batches == 0
    result = telemetry_prune(now=now + timedelta(minutes=61))
    assert result.raw_batches == 1 and result.rollups == 0
    assert RawBatch.objects.filter(aggregated_at__isnull=True).count() == 1
    # 90 days later the rollups go
    assert telemetry_prune(now=now + timedelta(days=89)).rollups == 0
    assert telemetry_prune(now=now + timedelta(days=91)).rollups == 3  # evaluation, cohort, ingestion
    assert not EvaluationRollup.objects.exists() and not CohortRollup.objects.exists()


def test_prune__shorter_settings__applied(post, prod_key, settings):
    settings.TELEMETRY_RAW_RETENTION_SECONDS = 60
    settings.TELEMETRY_ROLLUP_RETENTION_DAYS = 1
    post(prod_key, make_batch(window=at()))
    telemetry_aggregate()
    result = telemetry_prune(now=datetime.now(UTC) + timedelta(days=1, minutes=2))
    assert (result.raw_batches, result.rollups) == (1, 3)


def test_aggregate_task__runs_rollup_and_retention(post, prod_key):
    post(prod_key, make_batch(window=at()))
    result = aggregate_task.delay().get()
    assert result["batches"] == 1 and result["deleted_raw_batches"] == 0


def test_migration__periodic_task_seeded_every_minute():
    task = PeriodicTask.objects.get(task="telemetry.aggregate")
    assert (task.interval.every, task.interval.period, task.enabled) == (1, "minutes", True)


def test_admin__ingestion_minutes__listed_read_only(admin_client, post, prod_key):
    post(prod_key, make_batch(window=at()))
    telemetry_aggregate()
    response = admin_client.get("/admin/telemetry/ingestionminute/")
    assert response.status_code == 200 and b"prod" in response.content
    assert admin_client.get("/admin/telemetry/ingestionminute/add/").status_code == 403


def test_selectors__time_range__only_the_minutes_inside(post, prod_key):
    # Given evaluations 3 minutes ago and now
    post(prod_key, make_batch(window=at(3), evaluations=[evaluation(4, names=["a"])], statebag=[]))
    post(prod_key, make_batch(window=at(0), evaluations=[evaluation(6, names=["b"])], statebag=[]))
    telemetry_aggregate()
    now = datetime.now(UTC)
    # Then a range of the last two minutes sees only the recent ones, per minute too
    [recent] = selectors.exposures(environment="prod", flag="use_zstd", since=now - timedelta(minutes=2))
    assert recent.evaluations == 6
    points = selectors.exposures_by_minute(
        environment="prod", flag="use_zstd", since=now - timedelta(minutes=10)
    )
    assert [p.evaluations for p in points] == [4, 6]
    assert points[0].minute < points[1].minute and all(p.units == pytest.approx(1, abs=0.01) for p in points)
    until = selectors.exposures(
        environment="prod",
        flag="use_zstd",
        since=now - timedelta(minutes=10),
        until=now - timedelta(minutes=2),
    )
    assert [e.evaluations for e in until] == [4]
    assert [
        p.batches for p in selectors.ingestion(environment="prod", since=now - timedelta(minutes=10))
    ] == [1, 1]


def test_sdk_recorder_batch__accepted_and_rolled_up(post, prod_key):
    """The SDK's own recorder makes a batch this service takes: the contract, both sides."""
    recorder_module = pytest.importorskip("analemma_sdk.telemetry.recorder")
    recorder = recorder_module.Recorder()
    for index in range(400):
        recorder.evaluation("use_zstd", None, index % 4 == 0, "rollout", f"exec-{index}")
    cohort = recorder.cohort({"use_zstd": True, "use_2pc": True})
    cohort.add("executions", 4)
    cohort.observe("hydrate", 3_000_000)  # 3 ms
    assert post(prod_key, recorder.snapshot_and_reset()).status_code == 202
    telemetry_aggregate()
    since = datetime.now(UTC) - timedelta(hours=1)
    found = {e.value: e for e in selectors.exposures(environment="prod", flag="use_zstd", since=since)}
    assert (found[False].evaluations, found[True].evaluations) == (300, 100)
    assert abs(found[False].units - 300) <= 3 * STANDARD_ERROR * 300
    split = selectors.cohort_split(environment="prod", flag="use_zstd", since=since)
    assert split["true"].executions == 4 and split["true"].quantile("hydrate", 0.95) == 4
