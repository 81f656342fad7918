"""Telemetry delivery at its edges: an entry the service would refuse is dropped (and counted)
alone, never the batch around it; the SDK checks the service's own bounds; an idle process
still sends fresh counts; a forked child neither repeats its parent's counts nor inherits a
held lock."""

from __future__ import annotations

import os
import threading
import time
import types

import pytest

from analemma_sdk import FlagClient
from analemma_sdk.flags import client as client_module
from analemma_sdk.statebag import MemoryStore, StateHydrator
from analemma_sdk.statebag import metrics as statebag_metrics
from analemma_sdk.telemetry import recorder as recorder_module
from analemma_sdk.telemetry import wire as sdk_wire
from analemma_sdk.telemetry.recorder import Recorder
from analemma_sdk.telemetry.sender import Telemetry

from .flag_server import FlagServer

KEY = "ask_prod_" + "k" * 43
# Telemetry on, a flush sending whenever asked; the flag server is tests/sdk/conftest.py's `served`.
pytestmark = pytest.mark.usefixtures("telemetry_every_flush")
IDS = {"owner_id": "owner-1", "workflow_id": "wf", "execution_id": "exec-1"}


@pytest.fixture
def clock(monkeypatch):
    """The recorder's wall clock, stepped by the test (the sender reads the batch's times)."""
    now = [time.time()]
    monkeypatch.setattr(recorder_module, "time", types.SimpleNamespace(time=lambda: now[0]))
    return now


def parse(body: dict):
    from telemetry.wire import parse_batch  # the service's own check of a batch

    return parse_batch(body, now=time.time())


def client_for(server: FlagServer) -> FlagClient:
    client = FlagClient(server.url, KEY, cache_path=None, ttl=3600)
    assert client.refresh()
    return client


# 1. A value JSON cannot carry -------------------------------------------------------------
@pytest.mark.parametrize(
    "evaluate",
    [
        lambda client: client.number("missing", default=float("nan")),
        lambda client: client.string("missing", default="\ud800"),
        lambda client: client.json("missing", default={"x": float("nan")}),
        lambda client: client.json("missing", default={"x": {1, 2}}),  # not JSON at all
    ],
    ids=["nan", "lone_surrogate", "nan_in_json", "set_in_json"],
)
def test_flush__value_json_cannot_carry__that_key_dropped_and_counted_the_rest_delivered(served, evaluate):
    # Given 50 evaluations of a flag, and one whose value no JSON body can carry
    client = client_for(served)
    for i in range(50):
        client.bool("on", unit=f"u{i}")
    evaluate(client)
    # When the counts are flushed
    assert client.flush(timeout=2.0) is True
    # Then the batch went out with the 50, the odd one reported as dropped, the service accepts it
    (batch,) = served.telemetry
    assert [(e["flag"], e["count"]) for e in batch["evaluations"]] == [("on", 50)]
    assert batch["dropped"] == 1
    assert parse(batch).dropped == 1


# 2. The service's bounds, by the service's measure ------------------------------------------
def test_wire_bounds__restated_in_the_sdk__equal_the_services():
    from telemetry import wire as service_wire

    for name in ("MAX_VALUE_BYTES", "MAX_TEXT", "MAX_INT", "MAX_COHORT_KEYS", "MAX_COUNT", "MAX_COUNTER"):
        assert getattr(sdk_wire, name) == getattr(service_wire, name), name
    assert sdk_wire.REASONS == service_wire.REASONS


FITS = [
    "x" * 1022,
    '"' * 511,
    "é" * 511,
    {"k": "é" * 508},
    "v" * 64,
]  # up to 1024 bytes as the service measures
TOO_BIG = ["x" * 1023, '"' * 512, "é" * 512, {"k": "é" * 509}, "\\" * 600]


def test_evaluations__at_and_over_the_value_and_variant_bounds__only_the_unfit_dropped():
    # Given values at exactly 1024 bytes of canonical JSON and just over, and variants at 256 and 257
    recorder = Recorder()
    for value in FITS + TOO_BIG:
        recorder.evaluation("edge", None, value, "default", "u")
    recorder.evaluation("edge", "v" * 256, True, "rollout", "u")
    recorder.evaluation("edge", "v" * 257, True, "rollout", "u")
    recorder.evaluation("edge", "\ud800", True, "rollout", "u")
    # When a batch is taken
    body = recorder.snapshot_and_reset()
    # Then the service accepts it, with every fitting value, and the rest counted as dropped
    batch = parse(body)
    assert sorted(map(repr, (e["value"] for e in body["evaluations"] if e["reason"] == "default"))) == sorted(
        map(repr, FITS)
    )
    assert [e["variant"] for e in body["evaluations"] if e["reason"] == "rollout"] == ["v" * 256]
    assert batch.dropped == len(TOO_BIG) + 2
    assert len(batch.evaluations) == len(FITS) + 1


BAD_TAGS = {"build id": "1", "tag": "x" * 257, "big": 2**63, "none": None, "n" * 65: 1, "_x": 1}
GOOD_TAGS = {"app": "x" * 256, "huge": 2**63 - 1, "neg": -(2**63 - 1), "on": True, "a:b.c-d_e": "ok"}


def test_cohort__tags_the_service_refuses__left_out_with_a_warning_evaluations_delivered(caplog):
    # Given a recorder with evaluations, and a cohort with good and bad tags
    recorder = Recorder()
    for i in range(100):
        recorder.evaluation("on", None, True, "default", f"u{i}")
    with caplog.at_level("WARNING", logger="analemma_sdk.telemetry"):
        recorder.cohort({**BAD_TAGS, **GOOD_TAGS}).add("executions", 1)
    # When a batch is taken
    body = recorder.snapshot_and_reset()
    # Then the service accepts it: the cohort holds only the good tags, each bad one was named
    batch = parse(body)
    assert body["statebag"][0]["cohort"] == GOOD_TAGS
    assert batch.evaluations[0].count == 100
    for name in BAD_TAGS:
        assert repr(name)[:80] in caplog.text


def test_hydrator__bad_cohort_tag__dehydrates_and_reports_without_it():
    # Given a hydrator configured with a tag no batch may carry, sharing a sink with evaluations
    sink = Telemetry("http://127.0.0.1:9", "never-sent")
    hydrator = StateHydrator(store=MemoryStore(), telemetry=sink, cohort={"build id": "7", "app": "svc"})
    sink.recorder.evaluation("on", None, True, "default", "u1")
    # When it dehydrates and hydrates
    hydrator.hydrate(hydrator.dehydrate({"step": 1}, **IDS))
    # Then its counts go out under the rest of its cohort, in a batch the service accepts
    body = sink.recorder.snapshot_and_reset()
    batch = parse(body)
    assert [entry["cohort"] for entry in body["statebag"]] == [{"app": "svc"}]
    assert batch.cohorts[0].counters["executions"] >= 1 and batch.evaluations[0].count == 1


# 3. An idle process -----------------------------------------------------------------------
def test_flush__after_an_hour_without_one__fresh_counts_delivered(served, clock):
    # Given a client that delivered a batch, then was idle for 61 minutes
    client = client_for(served)
    client.bool("on", unit="a")
    assert client.flush(timeout=2.0) is True
    clock[0] += 61 * 60
    # When 1000 evaluations happen just before the next flush
    for i in range(1000):
        client.bool("on", unit=f"u{i}")
    # Then they are delivered, none dropped, the window opening with them
    assert client.flush(timeout=2.0) is True
    assert served.counted("on") == 1001
    last = served.telemetry[-1]
    assert last["dropped"] == 0 and last["window"][0] == clock[0]


def test_flush__unsent_batch_restored_then_idle__new_counts_delivered(served, clock):
    # Given a batch that could not be sent (no time left) and went back into the recorder
    client = client_for(served)
    for i in range(5):
        client.bool("on", unit=f"u{i}")
    assert client.flush(timeout=0.0) is False
    assert not served.telemetry
    # When an hour passes and more is evaluated
    clock[0] += 61 * 60
    for i in range(10):
        client.bool("on", unit=f"late{i}")
    # Then everything goes out, nothing dropped
    assert client.flush(timeout=2.0) is True
    assert served.counted("on") == 15
    assert sum(batch["dropped"] for batch in served.stored.values()) == 0


# 4. Fork ----------------------------------------------------------------------------------
def _in_child(work) -> str:
    """Run ``work`` in a forked child; what it returns (as text), or "hung" after 3 s."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, str(work()).encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            answer = os.read(read, 4096).decode()
            os.close(read)
            return answer
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    os.close(read)
    return "hung"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_fork__engine_warnings_before_it__reported_by_the_parent_only():
    # Given a sink with a cohort, and 5 engine warnings counted before a fork
    sink = Telemetry("http://127.0.0.1:9", "never-sent")
    sink.recorder.cohort({"app": "x"}).add("executions", 1)
    sink.recorder.snapshot_and_reset()
    statebag_metrics.increment("statebag_zstd_unavailable_total", 5)

    def child_reports():
        body = sink.recorder.snapshot_and_reset()
        return body and [c["counters"].get("statebag_zstd_unavailable_total") for c in body["statebag"]]

    # When the child and the parent each take a batch
    child = _in_child(child_reports)
    body = sink.recorder.snapshot_and_reset()
    # Then only the parent's carries them
    assert child == "None"
    assert [c["counters"]["statebag_zstd_unavailable_total"] for c in body["statebag"]] == [5]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_fork__while_another_thread_holds_the_locks__child_does_not_hang(served):
    # Given the engine's metrics lock and the flag client's telemetry lock held at the fork
    client = client_for(served)
    held = [statebag_metrics._lock, client_module._telemetry_lock]
    for lock in held:
        lock.acquire()
    try:

        def child_work():
            statebag_metrics.increment("statebag_zstd_unavailable_total")
            return client.telemetry_sink() is not None

        # When the child counts a warning and reaches its telemetry sink
        answer = _in_child(child_work)
    finally:
        for lock in held:
            lock.release()
    # Then it does, with locks of its own
    assert answer == "True"


# 5. Dropped counts from the sender --------------------------------------------------------
def test_add_dropped__waits_for_the_recorders_lock():
    # Given a recorder whose lock another thread holds
    recorder = Recorder()
    recorder._lock.acquire()
    adder = threading.Thread(target=recorder.add_dropped, args=(3,))
    adder.start()
    adder.join(0.05)
    # Then the count waits for it, and lands once it is released
    assert adder.is_alive() and recorder.dropped == 0
    recorder._lock.release()
    adder.join(2.0)
    assert recorder.dropped == 3
