"""POST /api/v1/telemetry: accepted, replayed, malformed, unauthenticated, too big, over the
limit; and an SDK key files only for its own environment."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest

from keys.services import key_revoke
from rollout.models import SdkKey
from telemetry.models import IngestionMinute, RawBatch
from telemetry.services import ingestion_counts_flush

from .conftest import make_batch

pytestmark = pytest.mark.django_db


def test_ingest__valid_batch__202_and_one_raw_row_under_its_minute(post, prod_key):
    # Given a batch whose last event was 90 s ago
    now = time.time()
    batch = make_batch(window=[now - 120, now - 90])
    # When it is sent
    response = post(prod_key, batch)
    # Then it is stored once, for the key's environment, under the minute of window[1]
    assert response.status_code == 202
    assert response.json() == {"accepted": True, "batch": batch["batch"]}
    row = RawBatch.objects.get()
    assert (row.environment, row.batch, row.sdk) == ("prod", batch["batch"], "analemma-python/0.9")
    assert row.minute == datetime.fromtimestamp(int((now - 90) // 60) * 60, tz=UTC)
    assert row.aggregated_at is None


def test_ingest__same_batch_again__200_duplicate_and_nothing_changes(post, prod_key):
    batch = make_batch()
    assert post(prod_key, batch).status_code == 202
    stored = RawBatch.objects.get()
    # When the same batch id comes again, even with other content
    response = post(prod_key, {**batch, "dropped": 7})
    # Then it is a duplicate: the stored batch is the first one, and the replay is counted
    assert response.status_code == 200
    assert response.json() == {"accepted": False, "duplicate": True}
    assert list(RawBatch.objects.values_list("id", "dropped")) == [(stored.id, 0)]
    ingestion_counts_flush(now=time.time(), force=True)
    assert IngestionMinute.objects.get(environment="prod").duplicates == 1


def test_ingest__same_batch_id_in_two_environments__both_stored(post, prod_key, dev_key):
    batch = make_batch()
    assert post(prod_key, batch).status_code == 202
    assert post(dev_key, batch).status_code == 202
    assert sorted(RawBatch.objects.values_list("environment", flat=True)) == ["dev", "prod"]


@pytest.mark.parametrize(
    "naming", [{"environment": "dev"}, {"env": "dev", "sdk": {"name": "x", "version": "dev"}}]
)
def test_ingest__body_names_another_environment__filed_for_the_keys_own(post, prod_key, dev_key, naming):
    # Given a prod key and a body that claims another environment
    response = post(prod_key, make_batch(**naming))
    # Then the batch is prod's: the environment comes from the key alone
    assert response.status_code == 202
    assert list(RawBatch.objects.values_list("environment", flat=True)) == ["prod"]


def test_ingest__window_outside_the_last_hour__filed_at_the_clamped_minute(post, prod_key):
    now = time.time()
    post(prod_key, make_batch(window=[0, 1]))  # 1970
    post(prod_key, make_batch(window=[now + 86400, now + 86400]))  # tomorrow
    minutes = sorted(RawBatch.objects.values_list("minute", flat=True))
    earliest = datetime.fromtimestamp(now - 3600, tz=UTC)
    assert (
        earliest.replace(second=0, microsecond=0) <= minutes[0] <= datetime.fromtimestamp(now - 3540, tz=UTC)
    )
    assert minutes[1] == datetime.fromtimestamp(int(time.time() // 60) * 60, tz=UTC) or minutes[1] == (
        datetime.fromtimestamp(int(now // 60) * 60, tz=UTC)
    )


@pytest.mark.parametrize(
    "header",
    [None, "Bearer ", "Bearer ask_prod_wrong", "Basic abc", "Bearer " + "x" * 5000],
)
def test_ingest__missing_or_wrong_key__401_and_nothing_stored(post, header):
    headers = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = post(None, make_batch(), **headers)
    assert response.status_code == 401
    assert RawBatch.objects.count() == 0


def test_ingest__revoked_key__401_at_once(post, django_capture_on_commit_callbacks):
    from ..factories import sdk_key

    key, raw = sdk_key("prod")
    assert post(raw, make_batch()).status_code == 202
    with django_capture_on_commit_callbacks(execute=True):
        key_revoke(key=SdkKey.objects.get(pk=key.pk), actor="ops")
    assert post(raw, make_batch()).status_code == 401
    assert RawBatch.objects.count() == 1


def test_ingest__write_key_with_evaluations__400(post):
    # A write key files cohorts only (tests/telemetry/test_write_key_ingest.py): it evaluates no flags.
    from ..factories import write_key

    _, raw = write_key("acme")
    assert post(raw, make_batch()).status_code == 400
    assert RawBatch.objects.count() == 0


def test_ingest__body_over_64_kib__413_and_nothing_stored(post, prod_key):
    padding = [{"flag": "f", "variant": "v" * 200, "value": "x" * 900, "reason": "rollout", "count": 1}] * 80
    body = json.dumps(make_batch(evaluations=padding))
    assert len(body) > 64 * 1024
    response = post(prod_key, None, raw=body.encode())
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert RawBatch.objects.count() == 0


def test_ingest__body_at_the_configured_limit__accepted_and_one_byte_more_refused(post, prod_key, settings):
    batch = make_batch()
    body = json.dumps(batch).encode()
    settings.TELEMETRY_MAX_BODY_BYTES = len(body)
    assert post(prod_key, None, raw=body).status_code == 202
    settings.TELEMETRY_MAX_BODY_BYTES = len(body) - 1
    another = body.replace(batch["batch"].encode(), b"0" * 32)  # the same length, a new batch
    assert post(prod_key, None, raw=another).status_code == 413
    assert RawBatch.objects.count() == 1


def test_ingest__over_the_environment_limit__429_with_retry_after_and_counted(
    post, prod_key, dev_key, settings
):
    # Given a limit of 2 batches per 2-second window
    settings.TELEMETRY_MAX_BATCHES_PER_SECOND = 1
    settings.TELEMETRY_LIMIT_WINDOW_SECONDS = 2
    # Wait for the start of a window, so the three requests fall in the same one.
    time.sleep(2 - time.time() % 2)
    answers = [post(prod_key, make_batch()) for _ in range(3)]
    # Then the third is refused with a Retry-After within the window, and not stored
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert 1 <= int(answers[2]["Retry-After"]) <= 2
    assert answers[2].json()["code"] == "too_many_requests"
    assert RawBatch.objects.filter(environment="prod").count() == 2
    # Another environment has its own budget
    assert post(dev_key, make_batch()).status_code == 202
    # And the refusal is visible to operators
    ingestion_counts_flush(now=time.time(), force=True)
    assert IngestionMinute.objects.get(environment="prod").refused == 1


def test_ingest__limit_zero__no_limit(post, prod_key, settings):
    settings.TELEMETRY_MAX_BATCHES_PER_SECOND = 0
    assert all(post(prod_key, make_batch()).status_code == 202 for _ in range(5))


def test_ingest__get__405(client, prod_key):
    response = client.get("/api/v1/telemetry", HTTP_AUTHORIZATION=f"Bearer {prod_key}")
    assert response.status_code == 405


# Sketch versions --------------------------------------------------------------------------------
def _v1_units(names):
    from .test_sketch import sketch_of

    return base64.b64encode(sketch_of(names)).decode()


def _v2_units(names):
    from .test_sketch import v2_sketch_of

    return base64.b64encode(v2_sketch_of(f"use_zstd..{name}" for name in names)).decode()


def _units_entry(units, count=1):
    return {
        "flag": "use_zstd",
        "variant": None,
        "value": True,
        "reason": "rollout",
        "count": count,  # each unit evaluated at least once: the estimate never exceeds it
        "units": units,
    }


@pytest.mark.parametrize(
    ("units", "message"),
    [
        (base64.b64encode(b"\x03" + bytes(256)).decode(), "has sketch version 3"),
        (base64.b64encode(b"\x02" + bytes([53]) + bytes(255)).decode(), "has a register above 52"),
        (base64.b64encode(b"\x02" + bytes(257)).decode(), "holds 258 registers"),
    ],
    ids=["unknown_version", "rank_over_52", "long"],
)
def test_ingest__bad_versioned_sketch__400_naming_the_field(post, prod_key, units, message):
    response = post(prod_key, make_batch(evaluations=[_units_entry(units)]))
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(f"evaluations[0].units: {message}")
    assert RawBatch.objects.count() == 0


def test_ingest__old_and_new_sdk_sketches_in_one_minute__kept_apart_and_estimated_from_the_new(
    post, prod_key
):
    from telemetry import selectors
    from telemetry.models import EvaluationRollup
    from telemetry.services import telemetry_aggregate
    from telemetry.sketch import STANDARD_ERROR, sketch_versions

    # Given an old SDK reporting units 0-1499 (version 1) and new SDKs 1000-2999 (version 2)
    end = (time.time() // 60) * 60 + 1
    for units, count in (
        (_v1_units(f"u{i}" for i in range(1500)), 1500),
        (_v2_units(f"u{i}" for i in range(1000, 2000)), 1000),
    ):
        body = make_batch(window=[end - 1, end], evaluations=[_units_entry(units, count)])
        assert post(prod_key, body).status_code == 202
    telemetry_aggregate()
    # And a later batch of the new version for the same minute
    late = _v2_units(f"u{i}" for i in range(1500, 3000))
    assert (
        post(prod_key, make_batch(window=[end - 1, end], evaluations=[_units_entry(late, 1500)])).status_code
        == 202
    )
    telemetry_aggregate()
    # Then the minute's row holds one sketch per version, never one merged across them
    row = EvaluationRollup.objects.get()
    assert set(sketch_versions(bytes(row.units))) == {1, 2}
    # And the distinct units read from the new version alone: 2,000
    (exposure,) = selectors.exposures(
        environment="prod", flag="use_zstd", since=datetime.fromtimestamp(end - 120, tz=UTC)
    )
    assert exposure.evaluations == 4000
    assert abs(exposure.units - 2000) <= 3 * STANDARD_ERROR * 2000
