"""Flag-client telemetry against a real local HTTP server: exact counts, the refresh that carries
them, the time bound of a flush, what a failing service costs (kept or dropped), bounded memory,
and telemetry off."""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
import time
import tracemalloc
from typing import Any

import pytest

from analemma_sdk import FlagClient
from analemma_sdk.telemetry.hll import Sketch
from analemma_sdk.telemetry.recorder import FOLD_AT, MAX_EVALUATION_KEYS
from analemma_sdk.telemetry.sender import MAX_BODY_BYTES

from .flag_server import body_and_etag, document, flag


@pytest.fixture(autouse=True)
def _telemetry_by_default(monkeypatch):
    """These tests take telemetry as a client with a URL and a key has it by default: on, units
    included (whatever the environment running them says); a flush sends whenever asked (the
    interval between batches has tests of its own)."""
    monkeypatch.delenv("ANALEMMA_TELEMETRY", raising=False)
    monkeypatch.delenv("ANALEMMA_TELEMETRY_UNITS", raising=False)
    monkeypatch.setenv("ANALEMMA_TELEMETRY_INTERVAL", "0")


KEY = "ask_prod_" + "k" * 43


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any  # the TelemetryServer sets ``owner``

    def do_GET(self) -> None:  # http.server's name
        owner = self.server.owner
        owner.gets += 1
        body, etag = body_and_etag(owner.doc)
        self._send(200, body, {"ETag": etag})

    def do_POST(self) -> None:  # http.server's name
        try:
            self._post(self.server.owner)
        except OSError:
            pass  # the client gave up (a slow answer), as it should

    def _post(self, owner: TelemetryServer) -> None:
        owner.posts += 1
        owner.headers.append({k.lower(): v for k, v in self.headers.items()})
        data = self.rfile.read(int(self.headers["Content-Length"]))
        if owner.mode == "slow":
            time.sleep(owner.delay)
        if owner.mode == "garbage":
            self.wfile.write(b"\x00\x01 not http at all\r\n\r\n")
            self.close_connection = True
            return
        failures = {
            "500": (500, b'{"error": "no"}', {}),
            "429": (429, b'{"error": {"code": "rate_limited"}}', {"Retry-After": "30"}),
            "400": (400, b'{"error": {"code": "bad", "message": "no"}}', {}),
        }
        if owner.mode in failures:
            self._send(*failures[owner.mode])
            return
        batch = json.loads(data)
        if any(kept["batch"] == batch["batch"] for kept in owner.batches):
            # As the service does: a batch id sent again (its first reply was lost) counts once.
            self._send(200, b'{"accepted": false, "duplicate": true}')
            return
        owner.batches.append(batch)
        self._send(202, json.dumps({"accepted": True, "batch": batch["batch"]}).encode())

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class TelemetryServer:
    """Serves a flag set (GET /api/v1/flagset) and takes telemetry batches (POST
    /api/v1/telemetry), each batch id once as the service does. ``mode``: ok (202), 500, 429,
    400, garbage (not HTTP at all), slow (answers after ``delay`` seconds)."""

    def __init__(self, doc: dict[str, Any] | None = None) -> None:
        self.doc = doc or document(flag_a=flag())
        self.mode = "ok"
        self.delay = 5.0
        self.batches: list[dict[str, Any]] = []
        self.posts = 0
        self.gets = 0
        self.headers: list[dict[str, str]] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def evaluations(self) -> dict[tuple[Any, ...], dict[str, Any]]:
        found: dict[tuple[Any, ...], dict[str, Any]] = {}
        for batch in self.batches:
            for item in batch["evaluations"]:
                key = (
                    item["flag"],
                    item["variant"],
                    json.dumps(item["value"], sort_keys=True),
                    item["reason"],
                )
                assert key not in found, "one entry per key per batch"
                found[key] = item
        return found


@pytest.fixture
def server():
    doc = document(
        flag_a=flag(),
        half=flag(percentage=50),
        color=flag("string", "red", value="blue"),
        limit=flag("number", 1, value=7),
        shape=flag("json", {}, value={"w": 2, "h": 3}),
        ab=flag("string", "a", variants=[{"value": "a", "weight": 50_000}, {"value": "b", "weight": 50_000}]),
        dark=flag(enabled=False),
    )
    running = TelemetryServer(doc)
    yield running
    running.close()


def client_for(server: TelemetryServer, **options: Any) -> FlagClient:
    options.setdefault("cache_path", None)
    options.setdefault("ttl", 3600)
    return FlagClient(server.url, KEY, **options)


def dead_url() -> str:
    """A port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_flush__after_evaluations__server_gets_exact_counts_per_key(server):
    # Given a client with the flag set
    client = client_for(server)
    assert client.refresh()
    # When it evaluates through every kind of call, then flushes
    for i in range(100):
        assert client.bool("flag_a", unit=f"u{i}") is True
        client.bool("half", unit=f"u{i}")
    for i in range(10):
        assert client.string("color", unit=f"u{i}") == "blue"
        assert client.number("limit", unit="same") == 7
        assert client.json("shape") == {"w": 2, "h": 3}
        client.string_details("ab", unit=f"u{i}")
        assert client.bool_details("dark", unit=f"u{i}").reason == "off"
    assert client.bool("missing", default=True) is True
    assert client.number_details("color").error == "TYPE_MISMATCH"
    assert client.flush(timeout=2.0) is True
    # Then one batch, with each key counted exactly
    assert server.posts == 1 and len(server.batches) == 1
    batch = server.batches[0]
    assert batch["v"] == 1 and len(batch["batch"]) == 32 and int(batch["batch"], 16)
    assert batch["sdk"]["name"] == "analemma-python" and batch["dropped"] == 0
    assert batch["window"][0] <= batch["window"][1] <= batch["sent_at"] + 1e-6
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"
    found = server.evaluations()
    assert found[("flag_a", None, "true", "rollout")]["count"] == 100
    half_on = found[("half", None, "true", "rollout")]["count"]
    half_off = found[("half", None, "false", "default")]["count"]
    assert half_on + half_off == 100 and 30 < half_on < 70
    assert found[("color", None, '"blue"', "rollout")]["count"] == 10
    limit = found[("limit", None, "7", "rollout")]
    assert limit["count"] == 10 and Sketch.from_base64(limit["units"]).estimate() == pytest.approx(
        1, abs=0.01
    )
    shape = found[("shape", None, json.dumps({"w": 2, "h": 3}, sort_keys=True), "rollout")]
    assert shape["count"] == 10 and "units" not in shape  # no unit: nothing to sketch
    variants = {k[1]: v["count"] for k, v in found.items() if k[0] == "ab"}
    assert sum(variants.values()) == 10 and set(variants) <= {"0", "1"}
    assert found[("dark", None, "false", "off")]["count"] == 10
    assert found[("missing", None, "true", "error")]["count"] == 1
    assert found[("color", None, "0", "error")]["count"] == 1
    units = Sketch.from_base64(found[("flag_a", None, "true", "rollout")]["units"]).estimate()
    assert units == pytest.approx(100, rel=3 * 0.065)
    # And a second flush has nothing to send
    assert client.flush(timeout=2.0) is True and server.posts == 1


def test_refresh__when_due__carries_the_counts():
    # Given a client whose document is due for a refresh on a stepped clock
    now = [0.0]
    running = TelemetryServer()
    try:
        client = client_for(running, ttl=30, clock=lambda: now[0])
        for i in range(5):
            client.bool("flag_a", unit=f"u{i}")  # the first one fetches the document
        assert running.gets == 1 and running.posts == 0
        # When the TTL passes and the next evaluation refreshes
        now[0] += 31
        client.bool("flag_a", unit="late")
        # Then the counts went out with that refresh (the evaluation that triggered it is
        # counted after it, in the next batch)
        assert running.gets == 2 and running.posts == 1
        (item,) = running.batches[0]["evaluations"]
        assert item["count"] == 5 and item["reason"] == "rollout"
        assert client.telemetry_sink().recorder.snapshot_and_reset()["evaluations"][0]["count"] == 1
    finally:
        running.close()


def test_flush__dead_server__returns_false_within_timeout_and_keeps_the_counts():
    # Given a client whose service is gone
    client = FlagClient(dead_url(), KEY, cache_path=None, bootstrap=document(flag_a=flag()))
    for i in range(20):
        client.bool("flag_a", unit=f"u{i}")
    # When it flushes
    started = time.monotonic()
    delivered = client.flush(timeout=0.5)
    # Then it returns in time, without raising, and the counts wait for the next batch
    assert delivered is False and time.monotonic() - started < 1.0
    recorder = client.telemetry_sink().recorder
    body = recorder.snapshot_and_reset()
    assert body["evaluations"][0]["count"] == 20 and body["dropped"] == 0


def test_flush__server_that_never_answers__bounded_by_timeout(server):
    # Given a service that holds the request far longer than the flush may wait
    server.mode, server.delay = "slow", 5.0
    client = client_for(server, bootstrap=document(flag_a=flag()))
    client.bool("flag_a", unit="u")
    # When it flushes with a short bound
    started = time.monotonic()
    assert client.flush(timeout=0.3) is False
    # Then it returned within (a little over) the bound
    assert time.monotonic() - started < 0.8


@pytest.mark.parametrize("mode", ["500", "garbage"])
def test_flush__service_failing__batch_kept_as_is_and_sent_again_before_the_next(server, mode):
    # Given a service that fails the first batch (it may have stored it: the outcome is unknown)
    client = client_for(server, bootstrap=document(flag_a=flag()))
    for i in range(30):
        client.bool("flag_a", unit=f"first{i}")
    server.mode = mode
    assert client.flush(timeout=2.0) is False
    assert server.batches == []
    pending = client.telemetry_sink().pending
    assert pending is not None and pending["evaluations"][0]["count"] == 30
    # When more is evaluated and the service is back
    server.mode = "ok"
    for i in range(12):
        client.bool("flag_a", unit=f"second{i}")
    assert client.flush(timeout=2.0) is True
    # Then the failed batch went again under its own id, then the newer counts in one of theirs
    first, second = server.batches
    assert first == pending and client.telemetry_sink().pending is None
    assert second["batch"] != first["batch"]
    assert second["evaluations"][0]["count"] == 12 and second["dropped"] == 0
    assert Sketch.from_base64(second["evaluations"][0]["units"]).estimate() == pytest.approx(
        12, rel=3 * 0.065
    )


def test_flush__429__kept_and_not_sent_again_before_retry_after(server):
    client = client_for(server, bootstrap=document(flag_a=flag()))
    client.bool("flag_a", unit="u")
    server.mode = "429"
    assert client.flush(timeout=2.0) is False and server.posts == 1
    # Within Retry-After nothing is sent, whatever is recorded meanwhile
    server.mode = "ok"
    client.bool("flag_a", unit="v")
    assert client.flush(timeout=2.0) is False and server.posts == 1
    # Once it has passed, the refused batch goes again as it was, then what came since
    pending = client.telemetry_sink().pending
    client.telemetry_sink()._not_before = 0.0
    assert client.flush(timeout=2.0) is True
    assert server.batches[0] == pending and server.batches[0]["evaluations"][0]["count"] == 1
    assert server.batches[1]["evaluations"][0]["count"] == 1 and server.posts == 3


def test_flush__refused_with_400__dropped_and_reported_as_dropped(server):
    client = client_for(server, bootstrap=document(flag_a=flag()))
    for _ in range(7):
        client.bool("flag_a", unit="u")
    server.mode = "400"
    assert client.flush(timeout=2.0) is False
    server.mode = "ok"
    client.bool("flag_a", unit="u")
    assert client.flush(timeout=2.0) is True
    (batch,) = server.batches
    assert batch["dropped"] == 7 and batch["evaluations"][0]["count"] == 1


def test_memory__10000_distinct_keys__capped_and_excess_counted_as_dropped(server):
    # Given a client evaluating 10,000 distinct flag keys (none of them in the set)
    client = client_for(server, bootstrap=document(flag_a=flag()))
    for i in range(10_000):
        client.bool(f"flag-{i:05d}", unit=f"u{i}")
    # Then the recorder holds at most its cap of keys, and at most one log's worth of events
    recorder = client.telemetry_sink().recorder
    assert len(client._log) < FOLD_AT
    recorder.fold()
    assert len(recorder) == MAX_EVALUATION_KEYS
    # And a flush sends every kept key, in bodies within the wire's size limit, and the rest
    # as dropped
    assert client.flush(timeout=5.0) is True
    assert all(len(json.dumps(b, separators=(",", ":"))) <= MAX_BODY_BYTES for b in server.batches)
    sent = sum(item["count"] for b in server.batches for item in b["evaluations"])
    assert sent == MAX_EVALUATION_KEYS
    assert sum(b["dropped"] for b in server.batches) == 10_000 - MAX_EVALUATION_KEYS
    assert len({b["batch"] for b in server.batches}) == len(server.batches) > 1


def test_memory__kept_batches__never_more_than_one_batch_worth(server):
    # Given a service that fails every batch while keys keep arriving
    server.mode = "500"
    client = client_for(server, bootstrap=document(flag_a=flag()))
    for round_ in range(5):
        for i in range(300):
            client.bool(f"r{round_}-{i}", unit="u")
        client.flush(timeout=1.0)
    # Then what is kept stays within the caps (one pending body of at most the wire's size,
    # and the recorder's keys); the rest is counted as dropped
    sink = client.telemetry_sink()
    recorder, pending = sink.recorder, sink.pending
    recorder.fold()  # the evaluations logged since the last batch was taken
    assert len(recorder) == MAX_EVALUATION_KEYS
    assert len(json.dumps(pending, separators=(",", ":"))) <= MAX_BODY_BYTES
    held = sum(item["count"] for item in pending["evaluations"])
    assert 0 < held < 300
    assert recorder.dropped == 5 * 300 - MAX_EVALUATION_KEYS - held


def test_telemetry_off__sends_nothing_and_allocates_nothing_per_evaluation(server, monkeypatch):
    # Given one client off by argument and one by the environment
    off = client_for(server, bootstrap=document(flag_a=flag()), telemetry=False)
    monkeypatch.setenv("ANALEMMA_TELEMETRY", "false")
    env_off = client_for(server, bootstrap=document(flag_a=flag()))
    units = [f"u{i}" for i in range(2000)]
    for client in (off, env_off):
        client.bool("flag_a", unit="warm-up")
        # When it evaluates many times
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for unit in units:
            client.bool("flag_a", unit=unit)
            client.bool_details("flag_a", unit=unit)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        # Then nothing was kept per evaluation, and a flush sends nothing
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename") if stat.size_diff > 0)
        assert grown < 4096, grown
        assert client._log is None and client.telemetry_sink() is None
        assert client.flush(timeout=1.0) is True
    assert server.posts == 0


def test_telemetry_on__memory_per_evaluation_stays_bounded(server):
    # Given a client with telemetry on, evaluating far more than one log's worth
    client = client_for(server, bootstrap=document(flag_a=flag()))
    for i in range(FOLD_AT):
        client.bool("flag_a", unit=f"u{i}")
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(4 * FOLD_AT):
        client.bool("flag_a", unit=f"u{i % 100}")
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    # Then it holds at most one log's worth and its counts, however many evaluations
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename") if stat.size_diff > 0)
    assert grown < 200 * FOLD_AT, grown
    assert len(client._log) < FOLD_AT


def test_units_off__no_sketch_in_the_batch(server):
    client = client_for(server, bootstrap=document(flag_a=flag()), telemetry_units=False)
    client.bool("flag_a", unit="u")
    assert client.flush(timeout=2.0) is True
    assert "units" not in server.batches[0]["evaluations"][0]


def test_stale_document__evaluations_counted_with_reason_stale():
    # Given a client whose service went away after serving the document
    running = TelemetryServer()
    client = client_for(running)
    assert client.refresh()
    running.close()
    client.refresh()  # fails: the client now serves its last known good document
    assert client.status.state == "stale"
    client.bool("flag_a", unit="u")
    body = client.telemetry_sink().recorder.snapshot_and_reset()
    assert [(i["reason"], i["count"]) for i in body["evaluations"]] == [("stale", 1)]


def test_openfeature_provider__evaluations_counted(server):
    pytest.importorskip("openfeature")
    from openfeature.evaluation_context import EvaluationContext

    from analemma_sdk.flags.openfeature_provider import AnalemmaProvider

    client = client_for(server, bootstrap=document(flag_a=flag()))
    provider = AnalemmaProvider(client)
    for i in range(3):
        assert provider.resolve_boolean_details("flag_a", False, EvaluationContext(f"u{i}")).value is True
    body = client.telemetry_sink().recorder.snapshot_and_reset()
    assert [(i["flag"], i["reason"], i["count"]) for i in body["evaluations"]] == [("flag_a", "rollout", 3)]


def test_threads__concurrent_evaluations__none_lost(server):
    client = client_for(server, bootstrap=document(flag_a=flag()))

    def work(n: int) -> None:
        for i in range(3000):
            client.bool("flag_a", unit=f"t{n}-{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.flush(timeout=2.0) is True
    assert sum(i["count"] for b in server.batches for i in b["evaluations"]) == 12_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork__child_starts_with_nothing_of_the_parents_counts(server):
    # Given a client with counts recorded and logged but not sent
    client = client_for(server, bootstrap=document(flag_a=flag()))
    for i in range(FOLD_AT + 10):
        client.bool("flag_a", unit=f"u{i}")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reports what it holds, then leaves at once
        body = client.telemetry_sink().recorder.snapshot_and_reset()
        os.write(write, json.dumps(body).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    # Then the child holds nothing; the parent still holds (and sends) it all
    assert child is None
    assert client.flush(timeout=2.0) is True
    assert server.batches[0]["evaluations"][0]["count"] == FOLD_AT + 10


def test_units_off_by_environment__no_sketch(server, monkeypatch):
    monkeypatch.setenv("ANALEMMA_TELEMETRY_UNITS", "false")
    client = client_for(server, bootstrap=document(flag_a=flag()))
    client.bool("flag_a", unit="u")
    assert client.flush(timeout=2.0) is True
    assert "units" not in server.batches[0]["evaluations"][0]


def test_fold_threshold__client_and_recorder_agree():
    from analemma_sdk.flags import client as client_module

    assert client_module.TELEMETRY_FOLD_AT == FOLD_AT == 256  # the client's hot path spells it out


@pytest.mark.parametrize(
    ("url", "key", "variable", "argument", "on"),
    [
        ("http://127.0.0.1:9", KEY, None, None, True),  # a service: on
        ("", KEY, None, None, False),  # no URL: nowhere to send
        ("http://127.0.0.1:9", None, None, None, False),  # no key: nothing the service takes
        ("http://127.0.0.1:9", KEY, "false", None, False),
        ("http://127.0.0.1:9", KEY, "OFF", None, False),
        ("http://127.0.0.1:9", KEY, None, False, False),
        ("http://127.0.0.1:9", KEY, "true", False, False),  # the argument wins
        ("", KEY, "yes", None, True),  # asked for explicitly
    ],
)
def test_telemetry__on_by_default_for_a_client_of_a_service(monkeypatch, url, key, variable, argument, on):
    if variable is not None:
        monkeypatch.setenv("ANALEMMA_TELEMETRY", variable)
    client = FlagClient(url, key, cache_path=None, timeout=0.2, telemetry=argument)
    # Off: nothing is recorded, the flags are compiled with no tallies
    assert (client._log is not None) is on
    assert (client._counting == "units") is on  # units included by default
    compiled = client._accept(document(flag_a=flag())).flags["flag_a"]
    if on:
        compiled.counted("u", None)
        assert [tally.take()[0] for tally in compiled.tallies if tally.outcome[2] == "rollout"] == [1]
    else:  # compiled to evaluate, nothing more
        assert compiled.tallies == () and compiled._units is False


def test_refresh_and_flush__nothing_counted__no_request_and_no_telemetry_loaded(server):
    # Given a client on by default whose refreshes reach the service, nothing evaluated yet
    client = client_for(server)
    assert client.refresh() and client.refresh()
    # When it flushes
    assert client.flush(timeout=1.0) is True
    # Then nothing was sent, and no sink was made (the telemetry package stays unloaded)
    assert server.posts == 0 and client._telemetry is None
    # While one evaluation is enough for the next flush to carry it
    client.bool("flag_a", unit="u")
    assert client.flush(timeout=2.0) is True and server.posts == 1
