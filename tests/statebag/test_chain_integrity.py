"""The hash chain is enforced on read: a manifest whose stored rows were changed after it was
committed is a typed error and an alert on every server-side read path (the manifest API,
server-side hydration, a replayed commit) and in the SDK's HTTP client; the API answers
everything a client needs to recompute the hash, and the SDK checks it."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from analemma_sdk.statebag import LocalFolderStore, ManifestDraft, StateHydrator, manifest_hash, metrics
from analemma_sdk.statebag.errors import ManifestIntegrityError
from analemma_sdk.statebag.http_store import HttpManifestStore
from analemma_sdk.statebag.manifests import PrepareRequest
from statebag.models import DehydrationJob, Execution, Manifest, ManifestEntry, ManifestParent
from statebag.services import StateVersioningService, manifest_state
from statebag.services.hydrators import reset_service_hydrators
from statebag.services.jobs import job_run, job_submit

from ..factories import write_key

pytestmark = pytest.mark.django_db(transaction=True)
IDS = {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1"}


def state(step):
    return {
        "step": step,
        "status": f"s{step}",
        "messages": [{"text": f"turn {i} " * 300} for i in range(step)],
    }


@pytest.fixture
def service_root(statebag_storage, tmp_path):
    statebag_storage(folder=tmp_path / "svc")
    reset_service_hydrators()
    yield tmp_path / "svc"
    reset_service_hydrators()


@pytest.fixture
def versions(service_root):
    """Three versions of e1, recorded in process on the service's store; their manifests."""
    hydrator = StateHydrator(
        use_batching=True,
        inline_frames=False,
        use_zstd=True,
        store=LocalFolderStore(service_root),
        manifest_store=StateVersioningService(use_2pc=False),
    )
    payload = {}
    for step in (1, 2, 3):
        bag = hydrator.hydrate(payload)
        for name, value in state(step).items():
            bag[name] = value
        payload = hydrator.dehydrate(bag, idempotency_key=f"step-{step}", **IDS)
    return list(Manifest.objects.filter(execution__execution_id="e1").order_by("version"))


@pytest.fixture
def acme():
    return write_key("acme")[1]


def api_get(live_server, raw_key, path):
    request = urllib.request.Request(
        f"{live_server.url}/api/v1/statebag{path}", headers={"Authorization": f"Bearer {raw_key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


# Ways to change a committed manifest behind the service's back.
def overwrite_entry(manifest):
    ManifestEntry.objects.filter(manifest=manifest, field="status").update(stored="TAMPERED")


def delete_entry(manifest):
    ManifestEntry.objects.filter(manifest=manifest, field="status").delete()


def add_entry(manifest):
    ManifestEntry.objects.create(manifest=manifest, field="extra", kind="inline", stored="TAMPERED")


def change_cohort(manifest):
    Manifest.objects.filter(pk=manifest.pk).update(cohort={"use_zstd": "TAMPERED"})


def relink_parent(manifest):
    link = ManifestParent.objects.get(child=manifest)
    other = Manifest.objects.filter(execution=manifest.execution).exclude(
        pk__in=[manifest.pk, link.parent_id]
    )
    ManifestParent.objects.filter(pk=link.pk).update(parent=other.first())


def rename_workflow(manifest):
    Execution.objects.filter(pk=manifest.execution_id).update(workflow_id="TAMPERED")


TAMPERINGS = [overwrite_entry, delete_entry, add_entry, change_cohort, relink_parent, rename_workflow]


def test_manifest_api__answer__holds_everything_to_recompute_the_hash(live_server, versions, acme):
    status, body = api_get(live_server, acme, "/executions/e1/manifests/2")
    document = json.loads(body)
    assert status == 200
    assert document["parents"] == [versions[0].hash] and document["format"] == 1
    assert (document["owner_id"], document["workflow_id"], document["execution_id"]) == ("acme", "wf", "e1")
    recomputed = manifest_hash(
        owner_id=document["owner_id"],
        workflow_id=document["workflow_id"],
        execution_id=document["execution_id"],
        version=document["version"],
        parents=document["parents"],
        entries=document["entries"],
        cohort=document["cohort"],
    )
    assert recomputed == document["hash"] == versions[1].hash
    checked = HttpManifestStore(live_server.url, acme, timeout=5).manifest("e1", 2)
    assert checked["hash"] == versions[1].hash


@pytest.mark.parametrize("tamper", TAMPERINGS)
def test_manifest_api__manifest_changed_in_the_database__integrity_error_and_alert(
    live_server, versions, acme, caplog, tamper
):
    tamper(versions[1])
    before = metrics.counters["statebag_integrity_errors_total"]
    with caplog.at_level(logging.CRITICAL, logger="statebag.integrity"):
        status, body = api_get(live_server, acme, "/executions/e1/manifests/2")
    answer = json.loads(body)
    assert status == 500 and answer["code"] == "integrity_error"
    assert b"TAMPERED" not in body and "entries" not in answer
    assert metrics.counters["statebag_integrity_errors_total"] >= before + 1
    alerts = [r for r in caplog.records if r.name == "statebag.integrity" and r.levelno == logging.CRITICAL]
    assert alerts and versions[1].hash in alerts[0].getMessage()
    with pytest.raises(ManifestIntegrityError):
        HttpManifestStore(live_server.url, acme, timeout=5).manifest("e1", 2)
    if tamper is not rename_workflow:  # the other versions are intact and still served
        assert api_get(live_server, acme, "/executions/e1/manifests/1")[0] == 200


@pytest.mark.parametrize("tamper", [overwrite_entry, relink_parent])
def test_server_side_hydration__tampered_manifest__refused(service_root, versions, tamper):
    tamper(versions[1])
    reader = StateHydrator(use_batching=True, inline_frames=False, store=LocalFolderStore(service_root))
    with pytest.raises(ManifestIntegrityError):
        manifest_state(Manifest.objects.get(pk=versions[1].pk), reader)
    assert manifest_state(versions[2], reader).to_dict() == state(3)


def test_dehydration_job__tampered_parent__fails_typed_nothing_committed(service_root, versions):
    overwrite_entry(versions[2])
    job = job_submit(**IDS, state={"status": "next"}, parent=versions[2].hash)
    job = job_run(str(job.pk))
    assert job.status == DehydrationJob.Status.FAILED and "ManifestIntegrityError" in job.error
    assert Execution.objects.get(execution_id="e1").head.version == 3


def test_replayed_commit__tampered_manifest__refused_not_handed_back(live_server, versions, acme):
    """A retry with the idempotency key of a committed version gets that version's entries back
    to put in its payload: they are checked first."""
    overwrite_entry(versions[1])
    store = HttpManifestStore(live_server.url, acme, timeout=5)
    with pytest.raises(ManifestIntegrityError):
        store.prepare(
            PrepareRequest("acme", "wf", "e1", (versions[0].hash,), (), (), idempotency_key="step-2")
        )
    with pytest.raises(ManifestIntegrityError):
        StateVersioningService(use_2pc=False).record(
            ManifestDraft("acme", "wf", "e1", (versions[0].hash,), {}, (), idempotency_key="step-2")
        )


# The SDK's own check, against answers a real HTTP server sends --------------------------------
class CannedService:
    """A loopback HTTP server answering every GET with one JSON document."""

    def __init__(self):
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps(canned.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.document = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def canned():
    service = CannedService()
    yield service
    service.close()


@pytest.fixture
def genuine(live_server, versions, acme):
    """The service's real answer for e1 v2."""
    return json.loads(api_get(live_server, acme, "/executions/e1/manifests/2")[1])


def test_sdk__genuine_answer__checked_and_returned(canned, genuine):
    canned.document = genuine
    assert HttpManifestStore(canned.url, "awk_x", timeout=5).manifest("e1", 2) == genuine


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["entries"].update(status="TAMPERED"),
        lambda d: d["entries"].pop("status"),
        lambda d: d.update(parents=[]),
        lambda d: d.update(cohort={"use_zstd": False}),
        lambda d: d.update(owner_id="globex"),
        lambda d: d.update(version=3),
        lambda d: d.update(format=2),
        lambda d: d.update(parents="not a list"),
        lambda d: d.pop("workflow_id"),
    ],
)
def test_sdk__answer_that_fails_its_hash__integrity_error(canned, genuine, change):
    change(genuine)
    canned.document = genuine
    with pytest.raises(ManifestIntegrityError):
        HttpManifestStore(canned.url, "awk_x", timeout=5).manifest("e1", 2)


def test_sdk__genuine_answer_for_another_execution_or_version__integrity_error(canned, genuine):
    canned.document = genuine
    store = HttpManifestStore(canned.url, "awk_x", timeout=5)
    with pytest.raises(ManifestIntegrityError):
        store.manifest("e2", "head")
    with pytest.raises(ManifestIntegrityError):
        store.manifest("e1", 1)


def test_sdk__answer_of_an_older_service__still_readable(canned, genuine):
    """A service that predates the fields the check needs: read as before, unchecked."""
    older = {name: genuine[name] for name in ("hash", "version", "execution_id", "entries", "cohort")}
    canned.document = older
    assert HttpManifestStore(canned.url, "awk_x", timeout=5).manifest("e1") == older
