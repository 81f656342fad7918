"""Committing and reading over HTTP on the embedded default, as the README configures a Lambda:
only STATEBAG_SERVICE_URL and STATEBAG_WRITE_KEY, no store of its own, the service keeping its
packs in a local folder. Every step runs in a new process with its own empty temp folder (a
new container), and a fresh one reads the state back. Reads go through the service's
owner-scoped ranged-read endpoint; a failure after prepare aborts the transaction at once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from analemma_sdk.statebag import LocalFolderStore, StateHydrator, get_hydrator, reset_hydrators
from analemma_sdk.statebag.errors import (
    BlobNotFoundError,
    ManifestServiceUnavailableError,
    StoreReadOnlyError,
    UploadRejectedError,
)
from analemma_sdk.statebag.http_store import HttpManifestStore, ServicePackStore
from statebag.models import CommitTransaction, Manifest, Pack
from statebag.services import StateVersioningService, reads

from ..factories import write_key

pytestmark = pytest.mark.django_db(transaction=True)
SDK = Path(__file__).resolve().parents[2] / "sdk"

STEP = """
import json, sys
from analemma_sdk.statebag import get_hydrator
event = json.loads(sys.stdin.read())
hydrator = get_hydrator(**event["config"])
state = hydrator.hydrate(event["payload"])
seen = state.to_dict()
for name, value in event["changes"].items():
    state[name] = value
payload = hydrator.dehydrate(state, owner_id="acme", workflow_id="wf", execution_id="x1")
print(json.dumps({"payload": payload, "seen": seen, "store": type(hydrator.store).__name__}))
"""


def changes(step):
    """Each step replaces a large field (over the legacy path's 10 KB) and appends a large
    message: new objects every step, on every path that writes packs."""
    return {
        "step": step,
        "llm_response": {"text": f"answer {step} " * 1400},
        "messages": [{"content": f"turn {i} " * 400} for i in range(step + 1)],
    }


def expected_after(step):
    return changes(step)


@pytest.fixture
def service_root(statebag_storage, tmp_path):
    statebag_storage(folder=tmp_path / "service")
    return tmp_path / "service"


@pytest.fixture
def acme():
    return write_key("acme")[1]


def lambda_env(live_server, key, container, upload):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "STATEBAG", "USE_", "ZSTD"))}
    env.update(
        PYTHONPATH=str(SDK),
        TMPDIR=str(container),  # the container's own temp folder: the default store's home
        STATEBAG_SERVICE_URL=live_server.url,
        STATEBAG_WRITE_KEY=key,
    )
    if upload:
        env["STATEBAG_UPLOAD"] = upload
    return env


BATCHED_2PC = {"use_batching": True, "inline_frames": False, "use_zstd": True, "use_2pc": True}


def run_step(live_server, key, container, upload, payload, step_changes, config=BATCHED_2PC):
    container.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", STEP],
        input=json.dumps({"payload": payload, "changes": step_changes, "config": config}),
        env=lambda_env(live_server, key, container, upload),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("upload", [None, "direct", "presigned"])
def test_lambda_with_only_url_and_key__steps_in_new_containers__state_read_back(
    live_server, service_root, acme, tmp_path, upload
):
    payload = {}
    for step in range(1, 5):
        answer = run_step(live_server, acme, tmp_path / f"container-{step}", upload, payload, changes(step))
        assert answer["store"] == "ServicePackStore"
        assert answer["seen"] == (expected_after(step - 1) if step > 1 else {})
        payload = answer["payload"]
        assert "degraded" not in payload["__statebag__"]
    fresh = run_step(live_server, acme, tmp_path / "container-fresh", upload, payload, {})
    assert fresh["seen"] == expected_after(4)
    assert not CommitTransaction.objects.exclude(state=CommitTransaction.State.COMMITTED).exists()
    head = Manifest.objects.get(execution__execution_id="x1", version=5)
    # The fresh container changed nothing: it uploaded nothing and recorded in one call.
    assert head.committed_via == "noupload" and head.hash == fresh["payload"]["__statebag__"]["manifest"]
    assert Manifest.objects.get(execution__execution_id="x1", version=4).committed_via == "2pc"
    # The packs are in the service's folder, and none in any container's temp folder.
    assert Pack.objects.count() >= 4 and all((service_root / p.key).is_file() for p in Pack.objects.all())
    assert not [path for path in tmp_path.glob("container-*/**/*") if path.is_file()]


@pytest.mark.parametrize(
    "config",
    [
        {},  # every setting at its default: the legacy path, use_2pc off
        {"use_batching": True, "inline_frames": False, "use_zstd": True},
        {"use_batching": False, "use_2pc": False},
    ],
    ids=["defaults", "batched-no-2pc", "legacy-no-2pc"],
)
def test_lambda_with_only_url_and_key__use_2pc_off__commits_through_the_service_anyway(
    live_server, service_root, acme, tmp_path, config
):
    """The service is such a Lambda's store: whatever use_2pc says, its state is committed
    through the service and read back by a new container."""
    payload = {}
    for step in (1, 2):
        answer = run_step(
            live_server, acme, tmp_path / f"container-{step}", None, payload, changes(step), config
        )
        assert answer["store"] == "ServicePackStore"
        assert answer["seen"] == (expected_after(step - 1) if step > 1 else {})
        payload = answer["payload"]
        meta = payload["__statebag__"]
        assert "degraded" not in meta and meta["version"] == step
        assert meta["cfg"]["use_2pc"] is True  # the configuration it was written with
    fresh = run_step(live_server, acme, tmp_path / "container-fresh", None, payload, {}, config)
    assert fresh["seen"] == expected_after(2)
    assert not CommitTransaction.objects.exclude(state=CommitTransaction.State.COMMITTED).exists()
    # Steps that uploaded went in two phases. The last changed nothing: batched, that uploads
    # nothing and is recorded in one call; the legacy path writes every field it read again.
    last = "noupload" if config.get("use_batching") else "2pc"
    assert [m.committed_via for m in Manifest.objects.order_by("version")] == ["2pc", "2pc", last]
    assert Pack.objects.exists() and all((service_root / p.key).is_file() for p in Pack.objects.all())
    assert not [path for path in tmp_path.glob("container-*/**/*") if path.is_file()]


@pytest.mark.s3
def test_lambda_with_only_url_and_key__service_on_s3__uploads_presigned_reads_through_the_service(
    live_server, statebag_storage, s3_endpoint, s3_bucket, s3_client, acme, tmp_path
):
    statebag_storage(bucket=s3_bucket, endpoint=s3_endpoint)
    payload = {}
    for step in (1, 2):
        payload = run_step(live_server, acme, tmp_path / f"c{step}", None, payload, changes(step))["payload"]
    fresh = run_step(live_server, acme, tmp_path / "fresh", None, payload, {})
    assert fresh["seen"] == expected_after(2)
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys and all(k.startswith("svc/o/acme/p/") for k in keys)
    assert not CommitTransaction.objects.exclude(state=CommitTransaction.State.COMMITTED).exists()


def test_get_hydrator__only_url_and_key__the_service_is_the_store_and_commits_are_two_phase(
    monkeypatch, tmp_path, caplog
):
    monkeypatch.setenv("STATEBAG_SERVICE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("STATEBAG_WRITE_KEY", "awk_x")
    for name in ("STATEBAG_STORE_URL", "USE_BATCHING", "USE_ZSTD", "ZSTD_LEVEL", "USE_2PC"):
        monkeypatch.delenv(name, raising=False)
    # use_2pc off, by argument, by the emergency override or by default: two phases anyway
    with caplog.at_level(logging.INFO, logger="analemma_sdk.statebag"):
        without = get_hydrator(use_batching=True, inline_frames=False, use_2pc=False)
    assert "committing in two phases through the service" in caplog.text
    assert isinstance(without.store, ServicePackStore) and without.use_2pc
    assert isinstance(without.manifest_store, HttpManifestStore)
    with_2pc = get_hydrator(use_batching=True, inline_frames=False, use_2pc=True)
    assert with_2pc is without
    monkeypatch.setenv("USE_2PC", "0")
    assert get_hydrator(use_batching=True, inline_frames=False) is with_2pc
    monkeypatch.delenv("USE_2PC")
    legacy = get_hydrator()
    assert isinstance(legacy.store, ServicePackStore) and legacy.use_2pc and legacy.mode == "legacy"
    assert legacy.manifest_store is with_2pc.manifest_store
    # With a store given, or one of its own, use_2pc is as resolved and the store is read directly
    given = LocalFolderStore(tmp_path / "given")
    assert get_hydrator(store=given).store is given and not get_hydrator(store=given).use_2pc
    monkeypatch.setenv("STATEBAG_STORE_URL", f"file://{tmp_path / 'own'}")
    reset_hydrators()
    own = get_hydrator(
        use_batching=True, inline_frames=False, use_2pc=True
    ).store  # S3 or a folder: read directly
    assert isinstance(own, LocalFolderStore) and own.root == (tmp_path / "own").resolve()
    assert not get_hydrator(use_batching=True, inline_frames=False, use_2pc=False).use_2pc


def test_lambda_with_only_url_and_key__service_down__typed_error_not_a_local_write(monkeypatch, tmp_path):
    """With no store of its own there is nowhere readable to degrade to: a step that must store
    values fails with the typed error (the orchestrator retries it) instead of writing state
    that no other container can read."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setenv("STATEBAG_SERVICE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("STATEBAG_WRITE_KEY", "awk_x")
    monkeypatch.delenv("STATEBAG_STORE_URL", raising=False)
    hydrator = get_hydrator(use_batching=True, inline_frames=False, use_2pc=True)
    hydrator.manifest_store.timeout = hydrator.store.timeout = 0.5
    small = hydrator.dehydrate({"status": "open"}, owner_id="acme", workflow_id="wf", execution_id="x2")
    assert small["__statebag__"]["degraded"] is True  # all inline: nothing to store, readable
    large = {"llm_response": {"text": "answer " * 3000}}  # over the legacy path's 10 KB
    with pytest.raises(StoreReadOnlyError) as failed:
        hydrator.dehydrate(large, owner_id="acme", workflow_id="wf", execution_id="x2")
    assert isinstance(failed.value.__context__, ManifestServiceUnavailableError)
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]


# The ranged-read endpoint -----------------------------------------------------------------------
def http_get(url, key=None, range_header=None):
    headers = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if range_header is not None:
        headers["Range"] = range_header
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as refused:
        return refused.code, dict(refused.headers), refused.read()


@pytest.fixture
def stored(service_root, acme):
    """One committed pack of acme's, in the service's folder: (key, bytes)."""
    hydrator = StateHydrator(
        use_batching=True,
        inline_frames=False,
        use_2pc=True,
        store=LocalFolderStore(service_root),
        manifest_store=StateVersioningService(use_2pc=True),
    )
    noise = {"llm_response": {"text": os.urandom(6000).hex()}}  # does not compress away
    hydrator.dehydrate(noise, owner_id="acme", workflow_id="wf", execution_id="x3")
    pack = Pack.objects.order_by("-size").first()
    return pack.key, (service_root / pack.key).read_bytes()


def pack_url(live_server, key):
    return f"{live_server.url}/api/v1/statebag/packs/{key}"


def test_pack_read__whole_and_ranges(live_server, stored, acme):
    key, data = stored
    size = len(data)
    status, headers, body = http_get(pack_url(live_server, key), acme)
    assert (status, body, headers["Accept-Ranges"]) == (200, data, "bytes")
    for header, first, last in [
        ("bytes=10-99", 10, 99),
        ("bytes=100-", 100, size - 1),
        ("bytes=-50", size - 50, size - 1),
        (f"bytes=5-{size + 1000}", 5, size - 1),
    ]:
        status, headers, body = http_get(pack_url(live_server, key), acme, header)
        assert status == 206 and body == data[first : last + 1], header
        assert headers["Content-Range"] == f"bytes {first}-{last}/{size}"
    status, headers, body = http_get(pack_url(live_server, key), acme, f"bytes={size}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    assert json.loads(body)["code"] == "range_not_satisfiable"
    for bad in ["bytes=1-2,5-6", "items=0-1", "bytes=9-3", "bytes=-"]:
        status, _, body = http_get(pack_url(live_server, key), acme, bad)
        assert status == 400 and json.loads(body)["code"] == "invalid_request", bad
    assert http_get(pack_url(live_server, key))[0] == 401


def test_pack_read__other_owner_or_climbing_key__404_as_a_missing_one(live_server, stored, acme):
    key, _ = stored
    _, globex = write_key("globex")
    missing = http_get(pack_url(live_server, "o/acme/p/00/" + "0" * 64 + ".asbp"), acme)
    assert missing[0] == 404
    refused = [
        http_get(pack_url(live_server, key), globex),  # acme's pack, globex's key
        http_get(pack_url(live_server, "o/globex/../acme/" + key[len("o/acme/") :]), globex),
        http_get(pack_url(live_server, "o/globex/%2e%2e/acme/" + key[len("o/acme/") :]), globex),
        http_get(pack_url(live_server, "dicts/" + "a" * 32 + ".zdict"), acme),
        http_get(pack_url(live_server, "o/acme/p"), acme),  # a folder
        http_get(pack_url(live_server, "o/acme"), acme),
    ]
    for status, _, body in refused:
        assert (status, body) == (404, missing[2])
    assert ServicePackStore(live_server.url, globex, timeout=5).exists(key) is False
    with pytest.raises(BlobNotFoundError):
        ServicePackStore(live_server.url, globex, timeout=5).get(key)


def test_pack_read__longer_than_one_answer__read_in_ranges(live_server, stored, acme, monkeypatch):
    key, data = stored
    monkeypatch.setattr(reads, "MAX_READ_BYTES", 1000)
    assert len(data) > 3000
    status, _, body = http_get(pack_url(live_server, key), acme)
    assert status == 400 and b"in ranges" in body  # whole, without Range: over the limit
    status, headers, body = http_get(pack_url(live_server, key), acme, "bytes=0-")
    assert (status, headers["Content-Range"], body) == (206, f"bytes 0-999/{len(data)}", data[:1000])
    store = ServicePackStore(live_server.url, acme, timeout=5)
    assert store.get(key) == data
    assert store.get_range(key, 500, 2500) == data[500:3000]
    assert store.get_range(key, len(data) - 10, 100) == data[-10:]  # short at the end, as any store
    assert store.exists(key)


# Abort on every failure after prepare -----------------------------------------------------------
class ForgetfulStore(LocalFolderStore):
    def put(self, key, data):
        pass


class BrokenStore(LocalFolderStore):
    def put(self, key, data):
        raise OSError("disk full")


class RefusingCommit(HttpManifestStore):
    def commit(self, txn_id, entries, cohort):
        raise RuntimeError("lost before it was sent")


class UnabortableRefusingCommit(RefusingCommit):
    def abort(self, txn_id):
        raise ManifestServiceUnavailableError("gone")


@pytest.mark.parametrize(
    "store_class, manifest_class, error",
    [
        (ForgetfulStore, HttpManifestStore, UploadRejectedError),
        (BrokenStore, HttpManifestStore, OSError),
        (LocalFolderStore, RefusingCommit, RuntimeError),
    ],
)
def test_failure_after_prepare__transaction_aborted_at_once(
    live_server, service_root, acme, store_class, manifest_class, error
):
    hydrator = StateHydrator(
        use_batching=True,
        inline_frames=False,
        use_2pc=True,
        store=store_class(service_root),
        manifest_store=manifest_class(live_server.url, acme, timeout=5),
    )
    with pytest.raises(error):
        hydrator.dehydrate(changes(2), owner_id="acme", workflow_id="wf", execution_id="x4")
    txn = CommitTransaction.objects.get()
    assert (txn.state, txn.reason) == (CommitTransaction.State.ABORTED, "aborted by the client")
    assert not Manifest.objects.exists()


def test_failure_after_prepare__abort_fails_too__the_first_error_is_raised(live_server, service_root, acme):
    hydrator = StateHydrator(
        use_batching=True,
        inline_frames=False,
        use_2pc=True,
        store=LocalFolderStore(service_root),
        manifest_store=UnabortableRefusingCommit(live_server.url, acme, timeout=5),
    )
    with pytest.raises(RuntimeError, match="lost before it was sent"):
        hydrator.dehydrate(changes(2), owner_id="acme", workflow_id="wf", execution_id="x5")
    assert CommitTransaction.objects.get().state == CommitTransaction.State.PREPARED  # the reaper's
