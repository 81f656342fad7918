"""Hydrator telemetry: per-cohort counters that agree with a CountingStore, cold and warm
containers, two-phase commit outcomes, degraded-to-legacy events, and where the counts go (a
flag client, the process's default client, the write key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analemma_sdk import FlagClient
from analemma_sdk.flags import set_default_client
from analemma_sdk.statebag import (
    META_KEY,
    CountingStore,
    MemoryStore,
    StateHydrator,
    get_hydrator,
    reset_hydrators,
)
from analemma_sdk.statebag import metrics as statebag_metrics
from analemma_sdk.statebag.errors import ManifestConflictError, ManifestServiceUnavailableError
from analemma_sdk.statebag.manifests import ManifestRecord, Prepared
from analemma_sdk.telemetry import hydration
from analemma_sdk.telemetry.sender import Telemetry
from analemma_sdk.telemetry.wire import KNOWN_COUNTERS

from .flag_server import document, flag
from .test_telemetry_client import KEY, TelemetryServer


@pytest.fixture(autouse=True)
def _telemetry_by_default(monkeypatch):
    """These tests take telemetry as it is by default: on for a service with a key, units
    included (whatever the environment running them says)."""
    monkeypatch.delenv("ANALEMMA_TELEMETRY", raising=False)
    monkeypatch.delenv("ANALEMMA_TELEMETRY_UNITS", raising=False)


IDS = {"owner_id": "owner-1", "workflow_id": "wf", "execution_id": "exec-1"}
SDK = Path(__file__).resolve().parents[2] / "sdk"


def big_state(step: int = 0) -> dict:
    return {
        "status": "RUNNING",
        "step": step,
        "llm_response": {"text": "the answer is " * 800},
        "messages": [{"role": "user", "content": f"message {i} " * 40} for i in range(40)],
        "workflow_config": {"steps": [{"name": f"step-{i}", "retries": i} for i in range(100)]},
    }


def sink() -> Telemetry:
    return Telemetry("http://127.0.0.1:9", "never-sent")


def only_cohort(body: dict) -> dict:
    (entry,) = body["statebag"]
    return entry


@pytest.fixture(autouse=True)
def _fresh_factory():
    reset_hydrators()
    yield
    set_default_client(None)
    reset_hydrators()


class TwoPhase:
    """An in-memory two-phase manifest store that can be told to fail."""

    def __init__(self) -> None:
        self.version = 0
        self.fail: Exception | None = None
        self.aborted = 0

    def _next(self) -> ManifestRecord:
        if self.fail is not None:
            raise self.fail
        self.version += 1
        return ManifestRecord(f"{self.version:064x}", self.version)

    def record(self, draft):
        return self._next()

    def prepare(self, request):
        if self.fail is not None:
            raise self.fail
        return Prepared(txn_id=f"txn-{self.version}", expires_at=0.0)

    def commit(self, txn_id, entries, cohort):
        return self._next()

    def abort(self, txn_id):
        self.aborted += 1


@pytest.mark.parametrize(
    "options",
    [{}, {"use_batching": True, "use_zstd": True, "inline_frames": False}],
    ids=["legacy", "batched_packs"],
)
def test_cohort_counters__small_workload__match_a_counting_store(options):
    # Given a hydrator on a CountingStore, reporting to a telemetry sink
    counting = CountingStore(MemoryStore())
    telemetry = sink()
    hydrator = StateHydrator(store=counting, telemetry=telemetry, **options)
    reader = StateHydrator(store=counting, telemetry=telemetry, **options)  # a cold cache: reads
    # When one writes three steps of an execution and the other reads each, as Lambdas would
    payload = hydrator.dehydrate(big_state(0), **IDS)
    for step in (1, 2):
        bag = reader.hydrate(payload)
        assert bag["llm_response"]["text"].startswith("the answer")
        bag = dict(bag.to_dict(), step=step)
        bag["messages"] = bag["messages"] + [{"role": "assistant", "content": f"reply {step}"}]
        payload = hydrator.dehydrate(bag, **IDS)
    reader.hydrate(payload)["workflow_config"]
    # Then its cohort's request and byte counters are the store's own
    entry = only_cohort(telemetry.recorder.snapshot_and_reset())
    counters = entry["counters"]
    assert entry["cohort"] == hydrator.config_tag()
    assert set(KNOWN_COUNTERS) <= set(counters)
    assert counters["requests_put"] == counting.counts["puts"] > 0
    assert counters["requests_get"] == counting.counts["gets"] > 0
    assert counters["requests_head"] == counting.counts["heads"]
    assert counters["requests_delete"] == counting.counts["deletes"] == 0
    assert counters["requests_list"] == counting.counts["lists"] == 0
    assert counters["bytes_written"] == counting.counts["puts_bytes"]
    assert counters["bytes_read"] == counting.counts["gets_bytes"]
    # And the execution's shape
    assert counters["hydrations"] == 3 and counters["dehydrations"] == 3
    assert counters["executions"] == 6  # every dehydrate and every hydrate: no step does both
    assert counters["cold_containers"] + counters["warm_containers"] == 6
    assert counters["payload_bytes"] > 0 and counters["offloaded_bytes"] > 0 and counters["inline_bytes"] > 0
    assert counters["errors"] == 0 and counters["commits_2pc"] == counters["commits_record"] == 0
    hydrate = dict(map(tuple, entry["latency_ms"]["hydrate"]))
    dehydrate = dict(map(tuple, entry["latency_ms"]["dehydrate"]))
    assert sum(hydrate.values()) == 3 and sum(dehydrate.values()) == 3
    assert all(bound & (bound - 1) == 0 and 1 <= bound <= 65536 for bound in [*hydrate, *dehydrate])


def test_cold_and_warm__first_execution_in_the_process_is_cold(monkeypatch):
    # Given a process that has seen no execution yet
    monkeypatch.setattr(hydration, "_cold", True)
    telemetry = sink()
    hydrator = StateHydrator(store=MemoryStore(), telemetry=telemetry)
    other = StateHydrator(store=MemoryStore(), use_batching=True, telemetry=telemetry)
    # When three executions run on one hydrator, then one on another configuration
    for step in range(3):
        payload = hydrator.dehydrate({"step": step}, **IDS)
        hydrator.hydrate(payload)
        hydrator.dehydrate({"step": step + 1}, **IDS)
    other.hydrate(other.dehydrate({"step": 0}, **IDS))
    # Then only the very first was cold, whatever its cohort
    by_cohort = {
        e["cohort"]["use_batching"]: e["counters"]
        for e in telemetry.recorder.snapshot_and_reset()["statebag"]
    }
    assert by_cohort[False]["cold_containers"] == 1 and by_cohort[False]["warm_containers"] == 5
    assert by_cohort[True]["cold_containers"] == 0 and by_cohort[True]["warm_containers"] == 2


def test_cold__fresh_interpreter__its_first_execution_is_cold():
    program = (
        "from analemma_sdk.statebag import StateHydrator, MemoryStore\n"
        "from analemma_sdk.telemetry.sender import Telemetry\n"
        "t = Telemetry('http://127.0.0.1:9', 'k')\n"
        "h = StateHydrator(store=MemoryStore(), telemetry=t)\n"
        "h.hydrate(h.dehydrate({'a': 1}, owner_id='o', workflow_id='w', execution_id='e'))\n"
        "import json; print(json.dumps(t.recorder.snapshot_and_reset()['statebag'][0]['counters']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(SDK)},
    )
    counters = json.loads(done.stdout.splitlines()[-1])
    assert counters["cold_containers"] == 1 and counters["warm_containers"] == 1


def test_two_phase__outcomes__counted_per_path():
    # Given a batched hydrator committing through a two-phase manifest store
    manifests = TwoPhase()
    telemetry = sink()
    hydrator = StateHydrator(
        store=MemoryStore(),
        use_batching=True,
        use_zstd=True,
        use_2pc=True,
        inline_frames=False,
        manifest_store=manifests,
        telemetry=telemetry,
    )
    # When one version uploads a pack, the next uploads nothing, and a third is refused
    payload = hydrator.dehydrate(big_state(0), **IDS)
    state = hydrator.hydrate(payload)
    hydrator.dehydrate(state, **IDS)
    manifests.fail = ManifestConflictError("someone else moved the head")
    with pytest.raises(ManifestConflictError):
        hydrator.dehydrate(big_state(5), **IDS)
    # Then each path is counted, and the refusal as a typed error
    counters = only_cohort(telemetry.recorder.snapshot_and_reset())["counters"]
    assert counters["commits_2pc"] == 1
    assert counters["commits_record"] == 1
    assert counters["commits_failed"] == 1
    assert counters["errors"] == 1 and counters["error_ManifestConflictError"] == 1
    assert counters["degraded_to_legacy"] == 0


def test_degraded__manifest_service_down__counted_with_the_metric():
    manifests = TwoPhase()
    telemetry = sink()
    hydrator = StateHydrator(
        store=(counting := CountingStore(MemoryStore())),
        use_batching=True,
        use_2pc=True,
        inline_frames=False,
        manifest_store=manifests,
        telemetry=telemetry,
    )
    before = statebag_metrics.counters["statebag_degraded_to_legacy_total"]
    manifests.fail = ManifestServiceUnavailableError("down")
    payload = hydrator.dehydrate(big_state(0), **IDS)
    assert payload[META_KEY]["degraded"] is True
    counters = only_cohort(telemetry.recorder.snapshot_and_reset())["counters"]
    assert counters["degraded_to_legacy"] == 1
    assert statebag_metrics.counters["statebag_degraded_to_legacy_total"] == before + 1
    assert counters["commits_failed"] == 1 and counters["errors"] == 0
    # The degraded path's own writes count for the execution's cohort
    assert counters["requests_put"] == counting.counts["puts"] > 0


def test_hydrate__malformed_event__typed_error_counted_and_raised():
    telemetry = sink()
    hydrator = StateHydrator(store=MemoryStore(), telemetry=telemetry)
    with pytest.raises(Exception) as raised:
        hydrator.hydrate({"state_data": {META_KEY: "not an object"}})
    counters = only_cohort(telemetry.recorder.snapshot_and_reset())["counters"]
    assert counters["errors"] == 1 and counters[f"error_{type(raised.value).__name__}"] == 1


def test_get_hydrator__flag_client__reports_through_it():
    server = TelemetryServer(document(use_batching=flag(), use_zstd=flag()))
    try:
        client = FlagClient(server.url, KEY, cache_path=None)
        hydrator = get_hydrator(flags=client, unit="exec-1", store=MemoryStore())
        assert hydrator.use_batching and hydrator.telemetry.sink is client.telemetry_sink()
        hydrator.hydrate(hydrator.dehydrate({"a": 1}, **IDS))
        assert client.flush(timeout=2.0) is True
        (batch,) = server.batches
        assert {item["flag"] for item in batch["evaluations"]} >= {"use_batching", "use_zstd"}
        assert only_cohort(batch)["counters"]["dehydrations"] == 1
    finally:
        server.close()


def test_get_hydrator__default_client__picked_up():
    client = FlagClient("http://127.0.0.1:9", KEY, cache_path=None, bootstrap=document())
    set_default_client(client)
    hydrator = get_hydrator(store=MemoryStore())
    assert hydrator.telemetry is not None and hydrator.telemetry.sink is client.telemetry_sink()
    assert hydrator.use_batching is False  # telemetry only: the default client sets no configuration


def test_get_hydrator__write_key__sends_to_the_service_itself(monkeypatch):
    server = TelemetryServer()
    try:
        monkeypatch.setenv("STATEBAG_SERVICE_URL", server.url)
        monkeypatch.setenv("STATEBAG_WRITE_KEY", "swk_test_key")
        monkeypatch.setattr(hydration, "_services", {})
        hydrator = get_hydrator(store=MemoryStore())
        assert hydrator.telemetry.sink.url == server.url + "/api/v1/telemetry"
        hydrator.telemetry.send_every(1e-9)  # the next dehydration is due to send
        hydrator.dehydrate({"a": 1}, **IDS)
        (batch,) = server.batches
        assert server.headers[0]["authorization"] == "Bearer swk_test_key"
        assert only_cohort(batch)["counters"]["dehydrations"] == 1 and batch["evaluations"] == []
    finally:
        server.close()


def test_get_hydrator__telemetry_off__no_telemetry_at_all(monkeypatch):
    monkeypatch.setenv("STATEBAG_SERVICE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("STATEBAG_WRITE_KEY", "swk_test_key")
    assert get_hydrator(store=MemoryStore(), telemetry=False).telemetry is None
    reset_hydrators()
    monkeypatch.setenv("ANALEMMA_TELEMETRY", "false")
    client = FlagClient("http://127.0.0.1:9", KEY, cache_path=None, bootstrap=document())
    assert get_hydrator(flags=client, unit="e", store=MemoryStore()).telemetry is None
    assert StateHydrator(store=MemoryStore(), telemetry=client).telemetry is None


def test_cohorts__over_the_cap__counted_as_dropped():
    telemetry = sink()
    telemetry.recorder.max_cohorts = 2
    for level in range(4):
        hydrator = StateHydrator(
            store=MemoryStore(), use_batching=True, use_zstd=True, zstd_level=level + 1, telemetry=telemetry
        )
        hydrator.dehydrate({"a": level}, **IDS)
    body = telemetry.recorder.snapshot_and_reset()
    assert len(body["statebag"]) == 2 and body["dropped"] == 2


def test_get_hydrator__same_configuration_two_clients__one_hydrator_reports_to_the_latest():
    first = FlagClient("http://127.0.0.1:9", KEY, cache_path=None, bootstrap=document())
    second = FlagClient("http://127.0.0.1:9", KEY, cache_path=None, bootstrap=document())
    store = MemoryStore()
    hydrator = get_hydrator(telemetry=first, store=store)
    assert get_hydrator(telemetry=second, store=store) is hydrator  # its warm cache is kept
    hydrator.dehydrate({"a": 1}, **IDS)
    assert first.telemetry_sink().recorder.snapshot_and_reset() is None
    counters = only_cohort(second.telemetry_sink().recorder.snapshot_and_reset())["counters"]
    assert counters["dehydrations"] == 1
