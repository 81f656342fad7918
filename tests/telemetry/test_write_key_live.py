"""End to end, as the README configures a Lambda with no flag client: only STATEBAG_SERVICE_URL
and STATEBAG_WRITE_KEY. The hydrator commits through the real service on loopback, its cohort
batch goes out with the write key, is stored under the key's owner and rolled up, and the
metrics command reads it back."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from analemma_sdk.statebag import get_hydrator, reset_hydrators
from analemma_sdk.telemetry import hydration
from telemetry.models import CohortRollup, RawBatch
from telemetry.services import telemetry_aggregate

from ..factories import write_key

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lambda_env(live_server, statebag_storage, tmp_path, monkeypatch):
    statebag_storage(folder=tmp_path / "service")
    for name in ("STATEBAG_STORE_URL", "USE_BATCHING", "USE_ZSTD", "ZSTD_LEVEL", "USE_2PC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ANALEMMA_TELEMETRY", raising=False)
    monkeypatch.setenv("STATEBAG_SERVICE_URL", live_server.url)
    monkeypatch.setenv("STATEBAG_WRITE_KEY", write_key("acme")[1])
    monkeypatch.setattr(hydration, "_services", {})
    reset_hydrators()
    yield
    reset_hydrators()


def test_write_key_only__dehydrations_delivered_stored_and_rolled_up(lambda_env):
    hydrator = get_hydrator(use_zstd=True)
    sink = hydrator.telemetry.sink
    for step in range(3):
        state = hydrator.hydrate({})
        state["step"] = step
        hydrator.dehydrate(state, owner_id="acme", workflow_id="wf", execution_id=f"x{step}")
    assert sink.flush(timeout=5, force=True), sink.last_error
    assert sink.batches_sent == 1
    (raw,) = RawBatch.objects.all()
    assert raw.environment == "owner:acme"
    telemetry_aggregate()
    (rollup,) = CohortRollup.objects.all()
    assert rollup.environment == "owner:acme" and json.loads(rollup.cohort)["use_zstd"] is True
    assert rollup.counters["executions"] == 3 and rollup.counters["dehydrations"] == 3
    out = StringIO()
    call_command("telemetry", "metrics", "use_zstd", "--env", "owner:acme", "--json", stdout=out)
    assert json.loads(out.getvalue())["cohorts"]["true"]["executions"] == 3
