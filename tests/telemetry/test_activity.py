"""Last evaluated per flag and environment, kept by the per-minute aggregation: one row each
(and one per environment, for "its SDKs report"), moved forward only, read in one query."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from telemetry.activity import evaluations_record, flag_activity
from telemetry.models import FlagActivity
from telemetry.services import telemetry_aggregate

from .conftest import make_batch

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def window(minutes_ago: int) -> list[float]:
    end = (time.time() // 60) * 60 - 60 * minutes_ago + 1
    return [end - 1, end]


def evaluated(flag: str) -> dict[str, object]:
    return {"flag": flag, "variant": None, "value": True, "reason": "rollout", "count": 3}


def test_aggregation__records_last_and_first_evaluated_per_flag_and_environment(post, prod_key, dev_key):
    # Given batches of two minutes in prod (one of them late) and one in dev
    for key, minutes_ago, flags in (
        (prod_key, 1, ["use_zstd", "use_2pc"]),
        (prod_key, 5, ["use_zstd"]),
        (dev_key, 2, ["use_batching"]),
    ):
        body = make_batch(window=window(minutes_ago), evaluations=[evaluated(f) for f in flags], statebag=[])
        assert post(key, body).status_code == 202
    # When the aggregation runs
    telemetry_aggregate()
    # Then each (flag, environment) has its first and last minute, and each environment its own row
    rows = {(r.environment, r.flag): r for r in FlagActivity.objects.all()}
    assert set(rows) == {
        ("prod", "use_zstd"),
        ("prod", "use_2pc"),
        ("prod", ""),
        ("dev", "use_batching"),
        ("dev", ""),
    }
    minute = lambda ago: datetime.fromtimestamp(window(ago)[1] // 60 * 60, tz=UTC)  # noqa: E731
    assert (rows["prod", "use_zstd"].first_evaluated_at, rows["prod", "use_zstd"].last_evaluated_at) == (
        minute(5),
        minute(1),
    )
    assert rows["prod", "use_2pc"].first_evaluated_at == minute(1)
    assert (rows["prod", ""].first_evaluated_at, rows["prod", ""].last_evaluated_at) == (minute(5), minute(1))
    # And a batch of an older minute aggregated later does not move "last evaluated" back
    body = make_batch(window=window(3), evaluations=[evaluated("use_zstd")], statebag=[])
    assert post(prod_key, body).status_code == 202
    telemetry_aggregate()
    assert FlagActivity.objects.get(environment="prod", flag="use_zstd").last_evaluated_at == minute(1)


def test_evaluations_record__only_moves_outwards_and_writes_only_what_changed():
    assert evaluations_record([("prod", "a", T0), ("prod", "b", T0 + timedelta(minutes=1))]) == 3
    assert evaluations_record([("prod", "a", T0)]) == 0  # nothing new: nothing written
    assert evaluations_record([("prod", "a", T0 - timedelta(days=1))]) == 2  # earlier first, for a and prod
    row = FlagActivity.objects.get(environment="prod", flag="a")
    assert (row.first_evaluated_at, row.last_evaluated_at) == (T0 - timedelta(days=1), T0)
    assert evaluations_record([]) == 0


def test_flag_activity__the_flags_asked_for_and_every_environment_in_one_query():
    evaluations_record(
        [("prod", "a", T0), ("prod", "b", T0 + timedelta(hours=1)), ("dev", "c", T0 - timedelta(days=3))]
    )
    with CaptureQueriesContext(connection) as queries:
        activity = flag_activity(["a", "zzz"])
    assert len(queries.captured_queries) == 1
    assert activity.last_evaluated == {("a", "prod"): T0}
    assert activity.last("a", "prod") == T0 and activity.last("a", "dev") is None
    assert activity.reporting_since == {"prod": T0, "dev": T0 - timedelta(days=3)}
    assert flag_activity(None).last("b", "prod") == T0 + timedelta(hours=1)
