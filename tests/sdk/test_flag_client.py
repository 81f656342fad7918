"""FlagClient against a local HTTP server that misbehaves in every way a flag server can."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from analemma_sdk import FlagClient
from analemma_sdk.flags.spec import sdk_key_environment

from ..clock import SteppedClock
from .flag_server import FlagServer, body_and_etag, document, flag

KEY = "ask_prod_" + "s" * 43


@pytest.fixture
def server():
    served = FlagServer(
        document(1, use_batching=flag(), checkout=flag(kind="string", default="old", value="new"))
    )
    yield served
    served.close()


@pytest.fixture
def clock():
    return SteppedClock()


@pytest.fixture
def make_client(tmp_path, clock):
    def make(url, **options):
        options.setdefault("cache_path", tmp_path / "flags.bin")
        options.setdefault("timeout", 0.5)
        options.setdefault("clock", clock)
        return FlagClient(url, KEY, **options)

    return make


@pytest.fixture
def dead_url():
    """A loopback URL that refuses connections: its port stays bound, never listening, for
    the whole test, so no other server can appear there."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_fetch__then_within_ttl__one_request_and_local_evaluation(server, make_client):
    client = make_client(server.url, ttl=60)
    assert client.bool("use_batching", unit="exec-1") is True
    assert client.string("checkout", unit="exec-1", default="x") == "new"
    details = client.bool_details("use_batching", unit="exec-1")
    assert (details.value, details.reason, details.revision) == (True, "rollout", 1)
    assert len(server.requests) == 1
    assert server.requests[0]["authorization"] == f"Bearer {KEY}"


def test_refresh__after_ttl__sends_if_none_match_and_keeps_document_on_304(server, make_client, clock):
    client = make_client(server.url, ttl=0.05)
    client.bool("use_batching")
    clock.advance(0.1)
    assert client.bool("use_batching") is True
    _, etag = body_and_etag(server.doc)
    assert server.requests[-1]["if-none-match"] == etag
    assert client.status.state == "ready" and client.status.http_status == 304


def test_refresh__new_revision__served_after_ttl(server, make_client, clock):
    client = make_client(server.url, ttl=0.05)
    assert client.bool("use_batching") is True
    server.doc = document(2, use_batching=flag(enabled=False))
    clock.advance(0.1)
    details = client.bool_details("use_batching", unit="exec-1")
    assert (details.value, details.reason, details.revision) == (False, "off", 2)


def test_body_arriving_after_the_headers__read_completely(server, make_client):
    server.mode = "split"  # Connection: close, body in a later segment
    client = make_client(server.url, timeout=2)
    assert client.string("checkout", default="x") == "new"
    assert client.status.state == "ready"


def test_server_down__no_document__code_defaults_with_error_reason(dead_url, make_client):
    client = make_client(dead_url)
    assert client.bool("use_batching", default=True) is True
    details = client.number_details("zstd_level", default=3)
    assert (details.value, details.reason, details.error) == (3, "error", "PROVIDER_NOT_READY")
    assert client.status.state == "not_ready"


@pytest.mark.parametrize("mode", ["500", "garbage", "wrong_etag", "huge", "huge_chunked", "truncated"])
def test_bad_response__after_a_good_one__last_known_good_served_as_stale(server, make_client, clock, mode):
    client = make_client(server.url, ttl=0.05, max_bytes=1024 * 1024)
    assert client.string("checkout", default="x") == "new"
    server.mode = mode
    server.doc = document(2, checkout=flag(kind="string", default="old", value="broken"))
    clock.advance(0.1)
    details = client.string_details("checkout", unit="u", default="x")
    assert (details.value, details.reason, details.revision) == ("new", "stale", 1)
    assert client.status.state == "stale" and client.status.error


@pytest.mark.parametrize("mode", ["500", "garbage", "wrong_etag", "huge", "truncated", "401"])
def test_bad_response__first_fetch__code_defaults_never_raises(server, make_client, mode):
    server.mode = mode
    client = make_client(server.url, max_bytes=1024 * 1024)
    assert client.string("checkout", default="fallback") == "fallback"
    assert client.json("checkout", default={"a": 1}) == {"a": 1}


@pytest.mark.parametrize("mode", ["slow", "trickle"])
def test_slow_server__call_waits_at_most_the_timeout(server, make_client, mode):
    # slow: silent for 1 s; trickle: a byte every 0.3 s, each read well within a per-read timeout
    server.mode, server.delay = mode, 1.0 if mode == "slow" else 0.3
    client = make_client(server.url, timeout=0.5)
    started = time.monotonic()
    assert client.bool("use_batching", default=False) is False
    assert time.monotonic() - started < 0.5 + 0.25
    assert client.status.state == "not_ready"


def test_failure__backs_off__does_not_hit_the_server_every_call(server, make_client):
    server.mode = "500"
    client = make_client(server.url, ttl=30)
    for _ in range(50):
        client.bool("use_batching")
    assert len(server.requests) == 1
    assert client.status.failures == 1


def test_unauthorized__logged_loudly_and_reported_never_raised(server, make_client, caplog):
    server.mode = "401"
    client = make_client(server.url)
    with caplog.at_level(logging.WARNING, logger="analemma_sdk.flags"):
        assert client.bool("use_batching", default=False) is False
    assert client.status.state == "unauthorized" and client.status.http_status == 401
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "refused" in errors[0].getMessage()
    assert KEY not in caplog.text  # the key itself is never logged


def test_document_for_another_environment__refused(server, make_client):
    server.doc = document(5, environment="dev", use_batching=flag())
    client = make_client(server.url)
    details = client.bool_details("use_batching", default=False)
    assert (details.value, details.reason) == (False, "error")
    assert "environment 'dev'" in client.status.error


def test_304_with_another_etag__not_taken_as_confirmation(server, make_client, clock):
    client = make_client(server.url, ttl=0.05)
    client.bool("use_batching")
    server.mode = "bogus_304"
    clock.advance(0.1)
    assert client.bool_details("use_batching").reason == "stale"
    assert "304" in client.status.error


def test_304_for_a_document_never_held__is_an_error(server, make_client):
    server.mode = "bogus_304"
    client = make_client(server.url)
    assert client.bool_details("use_batching").error == "PROVIDER_NOT_READY"


def test_file_cache__second_client__evaluates_without_network(server, make_client):
    make_client(server.url, ttl=60).bool("use_batching")
    server.close()
    other = make_client(server.url, ttl=60)
    details = other.bool_details("use_batching", unit="exec-9")
    assert (details.value, details.reason, details.revision) == (True, "rollout", 1)


def test_file_cache__corrupt_or_foreign__ignored(server, make_client, tmp_path):
    path = tmp_path / "flags.bin"
    make_client(server.url, ttl=60).bool("use_batching")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    server.close()
    assert make_client(server.url, ttl=60).bool_details("use_batching").reason == "error"


def test_file_cache__writable_by_others__not_trusted(server, make_client, tmp_path):
    path = tmp_path / "flags.bin"
    make_client(server.url, ttl=60).bool("use_batching")
    path.chmod(0o666)
    server.close()
    assert make_client(server.url, ttl=60).bool_details("use_batching").reason == "error"


def test_file_cache__written_atomically_with_private_mode(server, make_client, tmp_path):
    make_client(server.url).bool("use_batching")
    assert (tmp_path / "flags.bin").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["flags.bin"]  # no temporary left behind


def test_bootstrap_snapshot__served_when_the_server_is_down(dead_url, make_client, tmp_path):
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps(document(4, use_batching=flag(percentage=0.0))))
    client = make_client(dead_url, bootstrap=snapshot)
    details = client.bool_details("use_batching", unit="exec-1", default=True)
    assert (details.value, details.reason, details.revision) == (False, "stale", 4)


def test_bootstrap_snapshot__fresh__evaluates_without_network(dead_url, make_client):
    snapshot = {"document": document(4, use_batching=flag()), "fetched_at": time.time()}
    client = make_client(dead_url, bootstrap=snapshot, ttl=60)
    assert client.bool_details("use_batching", unit="e").reason == "rollout"
    assert client.status.failures == 0


def test_bootstrap_garbage__ignored_with_a_warning(dead_url, make_client, tmp_path, caplog):
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="analemma_sdk.flags"):
        client = make_client(dead_url, bootstrap=snapshot)
    assert client.bool("use_batching", default=True) is True
    assert "bootstrap" in caplog.text


def test_fork__child_with_lock_held_at_fork__still_refreshes(server, make_client):
    client = make_client(server.url, ttl=60, cache_path=None)
    client.bool("use_batching")
    assert client._lock.acquire()  # as if another thread were mid-refresh when the process forked
    pid = os.fork()
    if pid == 0:  # child
        ok = client.refresh() and client.bool("use_batching") is True
        os._exit(0 if ok else 1)
    client._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_threads__concurrent_evaluations_during_refresh__never_fail(server, make_client):
    client = make_client(server.url, ttl=0.01)
    server.mode, server.delay = "slow", 0.05
    results: list[bool] = []

    def evaluate() -> None:
        for _ in range(200):
            results.append(client.bool("use_batching", unit="x", default=False))

    threads = [threading.Thread(target=evaluate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 800


@pytest.mark.parametrize("url, key", [(None, KEY), ("http://127.0.0.1:9", None), ("", "")])
def test_missing_settings__client_still_built_and_serves_defaults(url, key):
    client = FlagClient(url, key, cache_path=None, timeout=0.2)
    assert client.bool("use_batching", default=True) is True
    assert client.status.state in ("not_ready", "unauthorized") and client.status.error


def test_sdk_key_environment__parses_the_key_format():
    assert sdk_key_environment(KEY) == "prod"
    assert sdk_key_environment("ask_pre_prod_" + "a_b" * 14 + "x") == "pre_prod"
    assert sdk_key_environment("not-a-key") is None


def loaded_after(code: str, modules: set[str]) -> set[str]:
    sdk = Path(__file__).resolve().parents[2] / "sdk"
    wanted = " ".join(sorted(modules))
    program = f"import sys\n{code}\nprint(' '.join(sorted(set({wanted!r}.split()) & set(sys.modules))))"
    env = {**os.environ, "PYTHONPATH": str(sdk)}
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, check=True)
    return set(out.stdout.split())


HEAVY = {"django", "celery", "boto3", "botocore", "zstandard", "orjson", "openfeature", "requests", "urllib3"}


def test_import_and_network_path__load_no_server_or_optional_library():
    code = (
        "from analemma_sdk import FlagClient\n"
        "FlagClient('http://127.0.0.1:9', 'ask_prod_' + 'x' * 43, cache_path=None).bool('x')"
    )
    assert loaded_after(code, HEAVY) == set()


def test_warm_path__loads_nothing_it_does_not_need():
    code = (
        "import time\nfrom analemma_sdk import FlagClient\n"
        "doc = {'format': 1, 'environment': 'prod', 'revision': 1, 'flags': {}}\n"
        "FlagClient('http://127.0.0.1:9', 'ask_prod_' + 'x' * 43, cache_path=None,"
        " bootstrap={'document': doc, 'fetched_at': time.time()}).bool('x')"
    )
    extra = {"typing", "logging", "threading", "random", "json", "hashlib", "http.client", "ssl", "socket"}
    assert loaded_after(code, HEAVY | extra) == set()


@pytest.fixture
def tls_server(server, tmp_path):
    """The same server behind TLS, with a self-signed certificate for 127.0.0.1."""
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    return server.url.replace("http://", "https://"), cert


def test_https__untrusted_certificate__refused_and_defaults_served(tls_server, make_client):
    url, _ = tls_server
    client = make_client(url, timeout=2)
    assert client.bool("use_batching", default=False) is False
    assert "CERTIFICATE" in client.status.error.upper()


def test_https__trusted_certificate__document_fetched(tls_server):
    url, cert = tls_server
    code = (
        "import sys; from analemma_sdk import FlagClient;"
        f"c = FlagClient({url!r}, {KEY!r}, cache_path=None, timeout=5);"
        "print(c.string('checkout', default='x'), c.status.error)"
    )
    sdk = Path(__file__).resolve().parents[2] / "sdk"
    env = {**os.environ, "PYTHONPATH": str(sdk), "SSL_CERT_FILE": str(cert)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["new", "None"]
