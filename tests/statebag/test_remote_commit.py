"""The two-phase commit over HTTP: the SDK's HttpManifestStore against the real service on
loopback, with write keys scoped to an owner and uploads checked before commit."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest

from analemma_sdk.statebag import LocalFolderStore, StateHydrator, metrics
from analemma_sdk.statebag.errors import (
    ManifestServiceUnavailableError,
    UnknownTransactionError,
    UploadRejectedError,
    WriteKeyRejectedError,
)
from analemma_sdk.statebag.http_store import HttpManifestStore
from analemma_sdk.statebag.manifests import PrepareRequest
from keys.services import key_revoke
from statebag.models import CommitTransaction, Manifest, Pack

from ..factories import sdk_key, write_key

pytestmark = pytest.mark.django_db(transaction=True)
STATE = {"messages": [{"text": f"turn {i} " * 400} for i in range(12)], "status": "open"}


@pytest.fixture
def service_root(statebag_storage, tmp_path):
    statebag_storage(folder=tmp_path / "service-blobs")
    return tmp_path / "service-blobs"


@pytest.fixture
def acme_key():
    return write_key("acme", actor="ops")


def lambda_hydrator(live_server, raw_key, store, **options):
    return StateHydrator(
        use_batching=True,
        inline_frames=False,
        use_2pc=True,
        store=store,
        manifest_store=HttpManifestStore(live_server.url, raw_key, timeout=5, **options),
    )


def test_direct_upload__committed_through_the_api__hydrates_and_chains(live_server, service_root, acme_key):
    _, raw = acme_key
    hydrator = lambda_hydrator(live_server, raw, LocalFolderStore(service_root))
    first = hydrator.dehydrate_result(STATE, owner_id="acme", workflow_id="wf", execution_id="e1")
    bag = hydrator.hydrate(first.payload)
    bag["status"] = "closed"
    second = hydrator.dehydrate_result(
        bag,
        owner_id="acme",
        workflow_id="wf",
        execution_id="e1",
    )
    assert (first.version, second.version) == (1, 2)
    head = Manifest.objects.get(hash=second.manifest)
    # Only an inline field changed: nothing to upload, so one call recorded it.
    assert head.committed_via == "noupload" and head.parent_links.get().parent.hash == first.manifest
    assert hydrator.hydrate(second.payload).to_dict() == {**STATE, "status": "closed"}
    assert not Pack.objects.exclude(state=Pack.State.LIVE).exists()


def test_presigned_upload__through_the_service_endpoint(live_server, service_root, tmp_path, acme_key):
    _, raw = acme_key
    read_only_elsewhere = LocalFolderStore(tmp_path / "lambda-never-writes-here")
    hydrator = lambda_hydrator(live_server, raw, read_only_elsewhere, upload="presigned")
    result = hydrator.dehydrate_result(STATE, owner_id="acme", workflow_id="wf", execution_id="e2")
    assert result.version == 1
    assert not list((tmp_path / "lambda-never-writes-here").rglob("*.asbp"))  # all went to the URLs
    reader = StateHydrator(use_batching=True, inline_frames=False, store=LocalFolderStore(service_root))
    assert reader.hydrate(result.payload).to_dict() == STATE


@pytest.mark.s3
def test_presigned_upload__s3__objects_land_in_the_bucket(
    live_server, statebag_storage, s3_endpoint, s3_bucket, s3_client, acme_key, tmp_path
):
    from analemma_sdk.statebag.s3 import S3Store

    statebag_storage(bucket=s3_bucket, endpoint=s3_endpoint)
    _, raw = acme_key
    hydrator = lambda_hydrator(live_server, raw, LocalFolderStore(tmp_path / "unused"), upload="presigned")
    result = hydrator.dehydrate_result(STATE, owner_id="acme", workflow_id="wf", execution_id="e3")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys and all(k.startswith("svc/o/acme/p/") for k in keys)
    reader = StateHydrator(
        use_batching=True, inline_frames=False, store=S3Store(s3_bucket, "svc", client=s3_client)
    )
    assert reader.hydrate(result.payload).to_dict() == STATE


class TamperingStore(LocalFolderStore):
    """Writes something other than what the hydrator declared."""

    def put(self, key: str, data: bytes) -> None:
        super().put(key, data[:-1] + bytes([data[-1] ^ 1]))


class ForgetfulStore(LocalFolderStore):
    def put(self, key: str, data: bytes) -> None:
        pass


@pytest.mark.parametrize(
    "store_class, problem", [(TamperingStore, "sha256"), (ForgetfulStore, "not uploaded")]
)
def test_commit__uploads_missing_or_altered__refused_nothing_committed(
    live_server, service_root, acme_key, store_class, problem
):
    _, raw = acme_key
    hydrator = lambda_hydrator(live_server, raw, store_class(service_root))
    with pytest.raises(UploadRejectedError, match=problem):
        hydrator.dehydrate_result(STATE, owner_id="acme", workflow_id="wf", execution_id="e4")
    assert not Manifest.objects.exists()
    # The client aborts at once: nothing stays PREPARED until the reaper's turn.
    assert CommitTransaction.objects.get().state == CommitTransaction.State.ABORTED


def test_owner_scope__key_cannot_prepare_commit_or_read_for_another_owner(
    live_server, service_root, acme_key
):
    _, acme = acme_key
    _, globex = write_key("globex", actor="ops")
    result = lambda_hydrator(live_server, acme, LocalFolderStore(service_root)).dehydrate_result(
        STATE, owner_id="acme", workflow_id="wf", execution_id="e5"
    )
    intruder = HttpManifestStore(live_server.url, globex, timeout=5)
    with pytest.raises(WriteKeyRejectedError):
        intruder.prepare(PrepareRequest("acme", "wf", "e5", (), (), ()))
    with pytest.raises(LookupError):
        intruder.manifest("e5")
    txn = CommitTransaction.objects.get()
    with pytest.raises(UnknownTransactionError, match="no transaction") as other_owners:
        intruder.commit(str(txn.pk), {}, {})
    unknown_id = str(uuid.uuid4())
    with pytest.raises(UnknownTransactionError) as unknown:
        intruder.commit(unknown_id, {}, {})
    # Nothing to learn from the answer: the same, but for the id it names.
    assert str(other_owners.value).replace(str(txn.pk), unknown_id) == str(unknown.value)
    with pytest.raises(UnknownTransactionError):
        intruder.abort(str(txn.pk))
    assert HttpManifestStore(live_server.url, acme, timeout=5).manifest("e5")["hash"] == result.manifest


def test_owner_scope__packs_outside_the_owner_prefix__refused(live_server, service_root, acme_key):
    _, raw = acme_key
    body = {
        "owner_id": "acme",
        "workflow_id": "wf",
        "execution_id": "e6",
        "packs": [
            {
                "key": "o/globex/p/aa/x.asbp",
                "digest": "a" * 64,
                "size": 10,
                "frames": [{"digest": "b" * 64, "offset": 0, "length": 10, "codec": "raw", "raw_size": 10}],
            }
        ],
    }
    request = urllib.request.Request(
        f"{live_server.url}/api/v1/statebag/transactions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400 and b"outside owner acme" in refused.value.read()


@pytest.mark.parametrize("key", ["revoked", "wrong", "missing"])
def test_bad_write_key__401_typed_error(live_server, service_root, acme_key, key):
    row, raw = acme_key
    if key == "revoked":
        key_revoke(key=row, actor="ops")
    presented = {"revoked": raw, "wrong": "awk_" + "x" * 43, "missing": ""}[key]
    with pytest.raises(WriteKeyRejectedError):
        HttpManifestStore(live_server.url, presented, timeout=5).manifest("e1")


def test_write_key__stored_hashed_only(acme_key):
    row, raw = acme_key
    assert raw not in (row.key_hash, row.prefix) and len(row.key_hash) == 64 and raw.startswith(row.prefix)


def test_service_unreachable__degrades_to_legacy_with_metric_and_hydrates(tmp_path):
    before = metrics.counters["statebag_degraded_to_legacy_total"]
    store = LocalFolderStore(tmp_path / "blobs")
    down = HttpManifestStore("http://127.0.0.1:9", "awk_x", timeout=0.5)
    hydrator = StateHydrator(
        use_batching=True, inline_frames=False, use_2pc=True, store=store, manifest_store=down
    )
    result = hydrator.dehydrate_result(STATE, owner_id="acme", workflow_id="wf", execution_id="e7")
    assert result.payload["__statebag__"]["degraded"] is True and result.manifest is None
    assert metrics.counters["statebag_degraded_to_legacy_total"] == before + 1
    assert StateHydrator(store=store).hydrate(result.payload).to_dict() == STATE
    with pytest.raises(ManifestServiceUnavailableError):
        down.manifest("e7")  # the store itself reports the typed error


LAMBDA = """
import json, os, sys
from analemma_sdk import FlagClient
from analemma_sdk.statebag import get_hydrator

flags = FlagClient(os.environ["ANALEMMA_URL"], os.environ["ANALEMMA_SDK_KEY"], cache_path=None)
event = json.loads(sys.stdin.read())
hydrator = get_hydrator(flags=flags, event=event)
state = hydrator.hydrate(event)
state["turns"] = state.get("turns", []) + ["answer " * 500]
payload = hydrator.dehydrate(state, owner_id="acme", workflow_id="wf", execution_id=event["execution_id"])
heavy = sorted({"django", "celery", "psycopg"} & set(sys.modules))
print(json.dumps({"payload": payload, "mode": hydrator.mode, "2pc": hydrator.use_2pc, "heavy": heavy}))
"""


@pytest.mark.usefixtures("rollout_defaults")
def test_lambda_process__flags_and_commits_over_http__no_django(live_server, service_root, acme_key):
    """A separate Python process, as a Lambda: flags from the service turn batching and 2PC on,
    the commit goes through the API with the write key, and Django never loads there."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from rollout import services as rollout_services
    from rollout.models import Environment, Flag

    prod = Environment.objects.get(key="prod")
    for name in ("use_batching", "use_2pc"):
        rollout_services.flag_state_update(
            flag=Flag.objects.get(key=name),
            environment=prod,
            actor="ops",
            enabled=True,
            value=True,
            percentage=100,
        )
    _, raw_sdk_key = sdk_key(prod, actor="ops")
    sdk = Path(__file__).resolve().parents[2] / "sdk"
    env = {
        **os.environ,
        "PYTHONPATH": str(sdk),
        "ANALEMMA_URL": live_server.url,
        "ANALEMMA_SDK_KEY": raw_sdk_key,
        "STATEBAG_SERVICE_URL": live_server.url,
        "STATEBAG_WRITE_KEY": acme_key[1],
        "STATEBAG_STORE_URL": f"file://{service_root}",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    event = {"execution_id": "lambda-1", "question": "q " * 900}
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", LAMBDA],
            input=json.dumps(event),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert (answer["mode"], answer["2pc"], answer["heavy"]) == ("batched", True, [])
        event = {**answer["payload"], "execution_id": "lambda-1"}
    head = Manifest.objects.filter(execution__execution_id="lambda-1").order_by("-version").first()
    # "turns" is a control-plane field that fits the payload: nothing to upload, one call each.
    assert head.version == 2 and head.committed_via == "noupload"
    bag = StateHydrator(use_batching=True, inline_frames=False, store=LocalFolderStore(service_root)).hydrate(
        event
    )
    assert len(bag["turns"]) == 2
