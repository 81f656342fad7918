"""The SDK's FlagClient against the real service on loopback: the same document, ramps,
kills, rollbacks and revoked keys, seen through HTTP exactly as a Lambda sees them."""

from __future__ import annotations

import pytest

from analemma_sdk import FlagClient
from analemma_sdk.bucketing import bucket_value, in_rollout
from keys.services import key_revoke
from rollout import services
from rollout.models import Environment, Flag

from ..clock import SteppedClock
from ..factories import sdk_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rollout_defaults")]
TTL = 0.05
UNITS = [f"exec-{i}" for i in range(2000)]


@pytest.fixture
def prod():
    return Environment.objects.get(key="prod")


CLOCK = SteppedClock()


@pytest.fixture
def sdk(live_server, prod, tmp_path):
    key, raw = sdk_key(prod, actor="ops")
    client = FlagClient(
        live_server.url, raw, ttl=TTL, timeout=5, cache_path=tmp_path / "flags.bin", clock=CLOCK
    )
    client.key_row = key
    return client


def after_ttl():
    CLOCK.advance(TTL * 2)


def test_fresh_install__statebag_flags_off(sdk):
    for name in ("use_batching", "use_zstd", "use_2pc"):
        details = sdk.bool_details(name, unit="exec-1", default=True)
        assert (details.value, details.reason) == (False, "off")
    assert sdk.number("zstd_level", unit="exec-1", default=9) == 3
    assert sdk.status.state == "ready" and sdk.revision is not None


def test_ramp_kill_rollback__client_follows_each_revision(sdk, prod):
    flag = Flag.objects.get(key="use_zstd")
    sdk.bool("use_zstd")
    ramped = services.flag_state_update(
        flag=flag, environment=prod, actor="ops", enabled=True, value=True, percentage=25
    )
    after_ttl()
    on = {unit for unit in UNITS if sdk.bool("use_zstd", unit=unit)}
    assert sdk.revision == ramped.number
    assert on == {
        u for u in UNITS if in_rollout(bucket_value("use_zstd", "", u), 25)
    }  # the server's bucketing

    services.flag_kill(flag=flag, environment=prod, actor="ops")
    after_ttl()
    assert sdk.bool_details("use_zstd", unit=next(iter(on))).reason == "off"

    back = services.revision_rollback(environment=prod, number=ramped.number, actor="ops")
    after_ttl()
    assert {unit for unit in UNITS if sdk.bool("use_zstd", unit=unit)} == on
    assert sdk.revision == back.number


def test_unchanged__revalidated_with_304(sdk):
    sdk.bool("use_batching")
    after_ttl()
    sdk.bool("use_batching")
    assert sdk.status.http_status == 304 and sdk.status.state == "ready"


def test_revoked_key__401_reported__last_document_served_stale(sdk):
    revision = sdk.revision or sdk.bool("use_batching") or sdk.revision
    key_revoke(key=sdk.key_row, actor="ops")
    after_ttl()
    details = sdk.bool_details("use_batching", unit="exec-1")
    assert (details.value, details.reason, details.revision) == (False, "stale", revision)
    assert sdk.status.state == "unauthorized" and sdk.status.http_status == 401


def test_wrong_key__not_ready__code_defaults(live_server, tmp_path):
    client = FlagClient(live_server.url, "ask_prod_" + "w" * 43, cache_path=None)
    assert client.bool("use_batching", default=True) is True
    assert client.status.state == "unauthorized"


def test_snapshot_command__bundled_file_serves_a_cold_start_without_network(live_server, prod, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    _, raw = sdk_key(prod, actor="ops")
    out = tmp_path / "flags.json"
    sdk = Path(__file__).resolve().parents[2] / "sdk"
    env = {**os.environ, "PYTHONPATH": str(sdk), "ANALEMMA_SDK_KEY": raw}
    done = subprocess.run(
        [sys.executable, "-m", "analemma_sdk.flags", "snapshot", "--url", live_server.url, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert raw not in done.stdout + done.stderr + out.read_text()
    revision = prod.revisions.order_by("-number").first().number
    cold = FlagClient("http://127.0.0.1:9", raw, cache_path=None, ttl=3600, bootstrap=out)
    details = cold.bool_details("use_batching", unit="exec-1")
    assert (details.reason, details.revision) == ("off", revision)
    assert cold.status.failures == 0  # fresh within its TTL: no network tried


def test_snapshot_command__no_key__refuses(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ANALEMMA_SDK_KEY"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "analemma_sdk.flags",
            "snapshot",
            "--url",
            "http://x",
            "--out",
            str(tmp_path / "f"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "ANALEMMA_SDK_KEY" in done.stderr
