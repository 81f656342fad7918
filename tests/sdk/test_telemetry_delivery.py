"""How flag-client telemetry reaches the service: a batch whose outcome is unknown goes again
under its own id (the service counts it once), the refresh path costs an evaluation at most
its small budget and backs off after a failure, and flushes send at most once per interval."""

from __future__ import annotations

import json
import time

import pytest

from analemma_sdk import FlagClient
from analemma_sdk.flags.client import REFRESH_TELEMETRY_BUDGET

from .flag_server import FlagServer, document, flag

KEY = "ask_prod_" + "k" * 43
# Telemetry on, a flush sending whenever asked; the flag server is tests/sdk/conftest.py's `served`.
pytestmark = pytest.mark.usefixtures("telemetry_every_flush")


def client_for(server: FlagServer, **options) -> FlagClient:
    options.setdefault("ttl", 3600)
    return FlagClient(server.url, KEY, cache_path=None, **options)


def test_flush__reply_timed_out_after_the_service_stored__sent_again_under_the_same_id(served):
    # Given a service that stores a batch, then answers too late for the flush
    client = client_for(served)
    assert client.refresh()
    for i in range(100):
        client.bool("on", unit=f"u{i}")
    served.post_delay = 0.4
    assert client.flush(timeout=0.1) is False
    # When more is evaluated and a flush with time enough follows
    for i in range(10):
        client.bool("on", unit=f"late{i}")
    assert client.flush(timeout=3.0) is True
    # Then the service counted every evaluation once: the first batch went again unchanged
    # (its id included), the newer counts after it in a batch of their own
    assert served.counted("on") == 110
    first, again, newer = served.telemetry
    assert again == first and newer["batch"] != first["batch"]
    assert newer["evaluations"][0]["count"] == 10 and newer["dropped"] == 0
    assert client.telemetry_sink().pending is None


def test_pending_batch__over_an_hour_old__dropped_and_reported_as_dropped(served):
    # Given a batch pending after a 503
    client = client_for(served, bootstrap=document(on=flag()))
    for i in range(7):
        client.bool("on", unit=f"u{i}")
    served.post_status = 503
    assert client.flush(timeout=2.0) is False
    sink = client.telemetry_sink()
    assert sink.pending is not None
    # When it is over an hour old by the next flush
    sink.pending["sent_at"] -= 3601  # first sent over an hour ago
    served.post_status = 0
    client.bool("on", unit="new")
    assert client.flush(timeout=2.0) is True
    # Then it is not sent again, and the next batch reports its evaluations as dropped
    assert len(served.telemetry) == 2 and sink.pending is None
    (batch,) = served.stored.values()
    assert batch["dropped"] == 7 and batch["evaluations"][0]["count"] == 1


def test_refresh__slow_telemetry_endpoint__evaluation_within_budget_and_refresh_path_backs_off(served):
    # Given a client refreshing on a stepped clock, and a telemetry endpoint that answers in 1 s
    now = [0.0]
    client = client_for(served, ttl=30, clock=lambda: now[0])
    client.bool("on", unit="first")  # fetches the document
    served.post_delay = 1.0
    # When three refreshes fall due, each with counts waiting
    worst = 0.0
    for round_ in range(3):
        for i in range(20):
            client.bool("on", unit=f"r{round_}-{i}")
        now[0] += 31
        started = time.monotonic()
        client.bool("on", unit="trigger")
        worst = max(worst, time.monotonic() - started)
    # Then no evaluation waited much past the send budget (the rest is the document's own
    # round trip, on a loaded machine; unbounded, the send alone took the endpoint's 1 s), and
    # only the first refresh sent
    assert len(served.requests) == 4
    assert worst < REFRESH_TELEMETRY_BUDGET + 0.3
    assert len(served.telemetry) == 1
    # And an explicit flush still sends during the back-off: everything, each batch once
    served.post_delay = 0.0
    assert client.flush(timeout=2.0) is True
    assert served.counted("on") == 1 + 3 * 21
    # And once the back-off has passed, a refresh sends again
    for i in range(5):
        client.bool("on", unit=f"after{i}")
    posts = len(served.telemetry)
    now[0] += 301
    client.bool("on", unit="trigger")
    assert len(served.telemetry) == posts + 1 and served.counted("on") == 1 + 3 * 21 + 5


def test_flush__within_the_interval__deferred_unless_forced(served, monkeypatch):
    # Given the default interval, and a function that flushes at the end of every invocation
    monkeypatch.delenv("ANALEMMA_TELEMETRY_INTERVAL")
    client = client_for(served)
    assert client.refresh()
    client.bool("on", unit="u")
    assert client.flush(timeout=2.0) is True and len(served.telemetry) == 1
    # When more invocations follow within 30 s
    for i in range(5):
        client.bool("on", unit=f"v{i}")
        assert client.flush(timeout=2.0) is True
    # Then they sent nothing (the counts wait), until a forced flush (a shutdown hook)
    assert len(served.telemetry) == 1 and client.telemetry_sink().last_outcome == "deferred"
    assert client.flush(timeout=2.0, force=True) is True
    assert len(served.telemetry) == 2 and served.counted("on") == 6


def test_flush__interval_from_the_environment__sends_again_once_it_passed(served, monkeypatch):
    monkeypatch.setenv("ANALEMMA_TELEMETRY_INTERVAL", "5")
    client = client_for(served, bootstrap=document(on=flag()))
    client.bool("on", unit="u")
    assert client.flush(timeout=2.0) is True
    client.bool("on", unit="v")
    assert client.flush(timeout=2.0) is True and len(served.telemetry) == 1
    sink = client.telemetry_sink()
    assert sink.min_interval == 5.0
    sink._delivered_at -= 5.0  # five seconds later, without waiting them
    assert client.flush(timeout=2.0) is True
    assert len(served.telemetry) == 2 and served.counted("on") == 2


def test_engine_warnings__reported_with_the_hydrator_cohort_and_accepted_by_the_service(served):
    from analemma_sdk.statebag import metrics
    from telemetry.wire import parse_batch

    # Given a hydrator cohort reporting through the client, and engine warnings meanwhile
    metrics.take_unreported()  # what other tests in this process left
    client = client_for(served, bootstrap=document(on=flag()))
    recorder = client.telemetry_sink().recorder
    recorder.cohort({"batching": True, "zstd": True}).add("executions", 3)
    recorder.cohort({"batching": False, "zstd": False}).add("executions", 1)
    metrics.increment("statebag_zstd_unavailable_total")
    metrics.increment("statebag_2pc_unavailable_total", 2)
    before = metrics.counters["statebag_zstd_unavailable_total"]
    # When the client flushes
    assert client.flush(timeout=2.0) is True
    # Then the busiest cohort carries them, in a batch the service's wire accepts
    (batch,) = served.stored.values()
    counters = {json.dumps(item["cohort"], sort_keys=True): item["counters"] for item in batch["statebag"]}
    busy = counters[json.dumps({"batching": True, "zstd": True}, sort_keys=True)]
    assert busy["statebag_zstd_unavailable_total"] == 1 and busy["statebag_2pc_unavailable_total"] == 2
    quiet = counters[json.dumps({"batching": False, "zstd": False}, sort_keys=True)]
    assert "statebag_zstd_unavailable_total" not in quiet
    parsed = parse_batch(batch, now=time.time())
    assert sum(c.counters.get("statebag_2pc_unavailable_total", 0) for c in parsed.cohorts) == 2
    # And the process counters still hold them; the next batch does not report them again
    assert metrics.counters["statebag_zstd_unavailable_total"] == before
    recorder.cohort({"batching": True, "zstd": True}).add("executions", 1)
    assert client.flush(timeout=2.0) is True
    last = [b for b in served.stored.values() if b is not batch][0]
    assert all("statebag_zstd_unavailable_total" not in item["counters"] for item in last["statebag"])
