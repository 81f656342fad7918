"""Two aggregation runs at once (a slow run overlapping the next tick) never count a batch
twice or lose one; the migrations apply and reverse. Real transactions, PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor

from telemetry.models import EvaluationRollup, IngestionMinute, RawBatch
from telemetry.services import batch_ingest, telemetry_aggregate
from telemetry.wire import parse_batch

from .conftest import make_batch

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need a server database")
def test_aggregate__two_runs_at_once__every_batch_counted_exactly_once():
    # Given 300 stored batches of 2 evaluations each, in two minutes
    now = time.time()
    for index in range(300):
        end = now - 60 * (index % 2)
        body = make_batch(
            window=[end - 1, end],
            evaluations=[
                {"flag": "use_zstd", "variant": None, "value": True, "reason": "rollout", "count": 2},
            ],
        )
        batch_ingest(environment="prod", batch=parse_batch(body, now=now), received_at=datetime.now(UTC))
    results = []

    def run() -> None:
        try:
            results.append(telemetry_aggregate(chunk=25))
        finally:
            connections.close_all()

    # When two runs roll them up at the same time, in small chunks
    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then both finished (a run that failed, on a deadlock say, would leave no result), between
    # them they took each batch once, and the sums are exact
    assert len(results) == 2
    assert sum(result.batches for result in results) == 300
    assert sum(EvaluationRollup.objects.values_list("evaluations", flat=True)) == 600
    assert sum(IngestionMinute.objects.values_list("batches", flat=True)) == 300
    assert not RawBatch.objects.filter(aggregated_at__isnull=True).exists()


def test_migrations__reverse_and_apply_again__tables_and_schedule_back():
    executor = MigrationExecutor(connection)
    executor.migrate([("telemetry", None)])
    executor = MigrationExecutor(connection)
    assert "telemetry_rawbatch" not in connection.introspection.table_names()
    leaf = executor.loader.graph.leaf_nodes("telemetry")
    executor.migrate(leaf)
    assert "telemetry_rawbatch" in connection.introspection.table_names()
    from django_celery_beat.models import PeriodicTask

    assert PeriodicTask.objects.filter(task="telemetry.aggregate").count() == 1
