"""A version that uploads nothing is recorded in one call (``POST /api/v1/statebag/manifests``,
``HttpManifestStore.record``, ``StateVersioningService.record``): no transaction to prepare,
yet every blob it points at is checked live, and held against collection, inside the
transaction that records it. Inline frames in the entries are checked before anything is
written."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from analemma_sdk.statebag import ManifestDraft, StateHydrator, metrics
from analemma_sdk.statebag.canonical import value_json
from analemma_sdk.statebag.errors import StaleReferenceError
from analemma_sdk.statebag.http_store import HttpManifestStore
from analemma_sdk.statebag.inline import encode_inline
from analemma_sdk.statebag.manifests import PackWrite
from statebag.errors import DanglingPointerError
from statebag.models import CommitTransaction, Execution, Manifest, Pack
from statebag.services import StateVersioningService, statebag_store
from statebag.services.collection import gc_sweep, pack_collect

from ..factories import write_key
from .test_api_bounds import BASE, PREPARE, Built, post, refused

pytestmark = pytest.mark.django_db(transaction=True)
RECORD = f"{BASE}/manifests"


@pytest.fixture
def store(statebag_storage, tmp_path):
    statebag_storage(folder=tmp_path / "service-blobs")
    return statebag_store()


@pytest.fixture
def raw_key():
    return write_key("acme")[1]


@pytest.fixture
def bearer(raw_key):
    return {"HTTP_AUTHORIZATION": f"Bearer {raw_key}"}


def stored_version(
    client, bearer, store, execution: str = "e1", owner: str = "acme"
) -> tuple[str, list[dict[str, Any]]]:
    """A first version through prepare and commit, with a pack of two frames: its hash and
    pointers to those frames."""
    pack = Built(frames=2, owner=owner)
    answer = post(
        client,
        PREPARE,
        {"owner_id": owner, "workflow_id": "wf", "execution_id": execution, "packs": [pack.declared]},
        bearer,
    )
    assert answer.status_code == 201, answer.content
    store.put(pack.key, pack.data)
    committed = post(
        client, f"{PREPARE}/{answer.json()['txn_id']}/commit", {"entries": {"a": pack.pointers()[0]}}, bearer
    )
    assert committed.status_code == 200, committed.content
    return committed.json()["hash"], pack.pointers()


def record_body(parents: list[str], entries: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "owner_id": "acme",
        "workflow_id": "wf",
        "execution_id": "e1",
        "parents": parents,
        "entries": entries,
        **fields,
    }


# The endpoint ------------------------------------------------------------------------------------
def test_record__nothing_to_upload__one_call_then_a_retry_replays(client, bearer, store):
    # Given a version with stored blobs
    head, pointers = stored_version(client, bearer, store)
    transactions = CommitTransaction.objects.count()
    # When the next step, keeping a blob and changing inline values, records in one call
    body = record_body(
        [head], {"a": pointers[0], "b": pointers[1], "status": "done"}, idempotency_key="step-2"
    )
    first = post(client, RECORD, body, bearer)
    # Then the version is there, with its blob links, and no transaction was prepared for it
    assert first.status_code == 201, first.content
    assert first.json()["version"] == 2 and first.json()["entries"] is None
    manifest = Manifest.objects.get(hash=first.json()["hash"])
    assert manifest.committed_via == "noupload" and manifest.blobs.count() == 2
    assert manifest.parent_links.get().parent.hash == head
    assert Execution.objects.get().head == manifest
    assert CommitTransaction.objects.count() == transactions
    # and the same call again answers that version, with its entries, and records nothing
    again = post(client, RECORD, body, bearer)
    assert again.status_code == 200 and again.json()["hash"] == first.json()["hash"]
    assert again.json()["entries"] == body["entries"]
    assert Manifest.objects.count() == 2


def test_record__first_version_of_a_new_execution__created(client, bearer, store):
    answer = post(client, RECORD, record_body([], {"status": "new"}, execution_id="fresh"), bearer)
    assert answer.status_code == 201, answer.content
    assert Execution.objects.get(execution_id="fresh").head.version == 1


def test_record__stale_parent__409_conflict_nothing_written(client, bearer, store):
    head, _ = stored_version(client, bearer, store)
    assert post(client, RECORD, record_body([head], {"s": 1}), bearer).status_code == 201
    before = Manifest.objects.count()
    answer = refused(post(client, RECORD, record_body([head], {"s": 2}), bearer), 409, "conflict")
    assert "v2" in answer["error"] and Manifest.objects.count() == before


def test_record__another_owners_execution__403(client, bearer, store):
    refused(post(client, RECORD, record_body([], {"s": 1}, owner_id="globex"), bearer), 403, "forbidden")
    assert not Manifest.objects.exists()


def test_record__blob_collected_meanwhile__409_stale_reference_nothing_written(client, bearer, store):
    # Given a stored blob whose pack a collector has marked for deletion
    head, pointers = stored_version(client, bearer, store)
    Pack.objects.update(state=Pack.State.DELETING)
    # When a step records a version that keeps it
    answer = refused(
        post(client, RECORD, record_body([head], {"a": pointers[0]}), bearer), 409, "stale_reference"
    )
    # Then the client is told which blob to store again, and nothing is recorded
    assert answer["digests"] == [pointers[0]["d"]]
    assert Manifest.objects.count() == 1 and Execution.objects.get().head.hash == head


def test_record__pointer_that_does_not_decode_the_frame_as_recorded__409_conflict(client, bearer, store):
    head, pointers = stored_version(client, bearer, store)
    wrong = dict(pointers[0], s=pointers[0]["s"] + 1)
    answer = refused(post(client, RECORD, record_body([head], {"a": wrong}), bearer), 409, "conflict")
    assert "raw_size" in answer["error"] and Manifest.objects.count() == 1


def test_record__another_owners_blob__409_and_nothing_read_of_it(client, bearer, store):
    _, globex = write_key("globex")
    _, pointers = stored_version(client, {"HTTP_AUTHORIZATION": f"Bearer {globex}"}, store, "g1", "globex")
    refused(post(client, RECORD, record_body([], {"a": pointers[0]}, execution_id="e9"), bearer), 409)
    assert not Manifest.objects.filter(execution__owner_id="acme").exists()


# Inline frames ---------------------------------------------------------------------------------
def inline_frame(value: Any) -> dict[str, Any]:
    return encode_inline(value_json(value)).to_json()


def test_record__inline_frame__recorded_as_sent(client, bearer, store):
    frame = inline_frame({"z": 1, "a": [1, 2, 3], "text": "x" * 500})
    answer = post(client, RECORD, record_body([], {"messages": frame}), bearer)
    assert answer.status_code == 201, answer.content
    assert Manifest.objects.get().entries.get().stored == frame


def test_commit__inline_frame__committed(client, bearer, store):
    """It was a 500: the commit's entry parser knew no inline frames."""
    prepared = post(client, PREPARE, {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1"}, bearer)
    frame = inline_frame({"b": 2, "a": 1})
    answer = post(client, f"{PREPARE}/{prepared.json()['txn_id']}/commit", {"entries": {"m": frame}}, bearer)
    assert answer.status_code == 200, answer.content
    assert Manifest.objects.get().entries.get().stored == frame


@pytest.mark.parametrize(
    "spoil, words",
    [
        (lambda f: dict(f, d="0" * 64), "digest"),
        (lambda f: dict(f, s=f["s"] + 5), "expected"),
        (lambda f: dict(f, s=f["s"] - 5), "expands past"),
        (lambda f: dict(f, b=f["b"][:-10]), "inline frame"),
        (lambda f: dict(f, b="~~~~"), "base85"),
    ],
    ids=["digest", "size-over", "size-under", "truncated", "not-base85"],
)
@pytest.mark.parametrize("path", ["record", "commit"])
def test_inline_frame__not_what_it_claims__400_naming_the_field(client, bearer, store, spoil, words, path):
    frame = spoil(inline_frame({"text": "hello " * 200}))
    if path == "record":
        response = post(client, RECORD, record_body([], {"llm_response": frame}), bearer)
    else:
        prepared = post(
            client, PREPARE, {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1"}, bearer
        )
        response = post(
            client,
            f"{PREPARE}/{prepared.json()['txn_id']}/commit",
            {"entries": {"llm_response": frame}},
            bearer,
        )
    answer = refused(response, 400, "invalid_request")
    assert "llm_response" in answer["error"] and words in answer["error"], answer["error"]
    assert not Manifest.objects.exists()


def test_inline_frames__decoding_past_the_blob_limit_in_all__400_before_decoding(
    client, bearer, store, settings
):
    settings.STATEBAG = {**settings.STATEBAG, "MAX_BLOB_BYTES": 4096}
    frames = {f"f{i}": inline_frame({"text": "a" * 1500}) for i in range(4)}  # each fits, not all
    answer = refused(post(client, RECORD, record_body([], frames), bearer), 400, "invalid_request")
    assert "in all" in answer["error"]


# The SDK ---------------------------------------------------------------------------------------
def test_http_store_record__no_packs__one_request(live_server, raw_key, store, monkeypatch):
    from analemma_sdk import _http

    sent = []
    real = _http.request

    def counting(method, url, *args, **kwargs):
        sent.append((method, url.rsplit("/api/v1/statebag", 1)[-1]))
        return real(method, url, *args, **kwargs)

    monkeypatch.setattr(_http, "request", counting)
    manifests = HttpManifestStore(live_server.url, raw_key, timeout=5)
    draft = ManifestDraft("acme", "wf", "e1", (), {"status": {"z": 1, "a": 2}}, (), idempotency_key="k1")
    first = manifests.record(draft)
    assert sent == [("POST", "/manifests")]
    assert (first.version, first.entries) == (1, None)
    assert manifests.record(draft).hash == first.hash  # a retry replays it
    assert not CommitTransaction.objects.exists()


def test_hydrator__step_with_nothing_to_upload__one_call_not_two_phases(
    live_server, raw_key, store, tmp_path
):
    from analemma_sdk.statebag import LocalFolderStore

    hydrator = StateHydrator(
        use_batching=True,
        use_2pc=True,
        store=LocalFolderStore(tmp_path / "service-blobs"),
        manifest_store=HttpManifestStore(live_server.url, raw_key, timeout=5),
    )
    payload = hydrator.dehydrate(
        {"status": "open", "turn": 1}, owner_id="acme", workflow_id="wf", execution_id="e1"
    )
    bag = hydrator.hydrate(payload)
    bag["turn"] = 2
    payload = hydrator.dehydrate(bag, owner_id="acme", workflow_id="wf", execution_id="e1")
    assert payload["__statebag__"]["version"] == 2
    assert set(Manifest.objects.values_list("committed_via", flat=True)) == {"noupload"}
    assert not CommitTransaction.objects.exists()


# In process: not a bypass ----------------------------------------------------------------------
def test_service_record__use_2pc_on_nothing_uploaded__not_counted_as_a_bypass(caplog):
    """It was counted in statebag_2pc_bypassed_total and logged as an error."""
    before = metrics.counters["statebag_2pc_bypassed_total"]
    draft = ManifestDraft("acme", "wf", "e1", (), {"status": "open"}, ())
    StateVersioningService(use_2pc=True).record(draft)
    assert metrics.counters["statebag_2pc_bypassed_total"] == before
    assert "without two-phase commit" not in caplog.text
    assert Manifest.objects.get().committed_via == "noupload"


def test_service_record__use_2pc_on_with_uploads__still_a_bypass(caplog, store):
    before = metrics.counters["statebag_2pc_bypassed_total"]
    pack = Built(frames=1)
    store.put(pack.key, pack.data)
    declared = PackWrite(pack.key, pack.declared["digest"], pack.declared["size"], tuple(pack.frames))
    draft = ManifestDraft("acme", "wf", "e1", (), {"a": pack.pointers()[0]}, (declared,))
    StateVersioningService(use_2pc=True).record(draft)
    assert metrics.counters["statebag_2pc_bypassed_total"] == before + 1
    assert Manifest.objects.get().committed_via == "direct"


# Collection, concurrently (PostgreSQL: SQLite serialises writers) ---------------------------------
@pytest.fixture
def postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL")


def test_record__collector_locked_the_pack_first__waits_then_refused(client, bearer, store, postgresql):
    """It was recorded: the live check read the pack without a lock, so a collector that had
    marked it DELETING, not yet committed, went on to delete what the new version points at."""
    head, pointers = stored_version(client, bearer, store)
    pack_id = Pack.objects.get().pk
    marked, release = threading.Event(), threading.Event()

    def collector():
        try:
            with transaction.atomic():
                pack = Pack.objects.select_for_update().get(pk=pack_id)
                pack.state = Pack.State.DELETING
                pack.save(update_fields=["state"])
                marked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=collector)
    thread.start()
    assert marked.wait(10)
    answers: list[Any] = []

    def record():
        try:
            answers.append(post(client, RECORD, record_body([head], {"a": pointers[0]}), bearer))
        finally:
            connection.close()

    recorder = threading.Thread(target=record)
    recorder.start()
    time.sleep(0.5)
    assert recorder.is_alive(), "the record must wait for the collector's lock"
    release.set()
    thread.join(10)
    recorder.join(10)
    refused(answers[0], 409, "stale_reference")
    assert Manifest.objects.count() == 1


def test_record__holds_the_pack_until_committed__collector_skips_it(store, postgresql, client, bearer):
    head, pointers = stored_version(client, bearer, store)
    pack = Pack.objects.get()
    Pack.objects.update(gc_candidate_since=pack.created_at)
    recorded, release = threading.Event(), threading.Event()

    def record():
        try:
            with transaction.atomic():  # the record's own transaction, kept open a moment
                draft = ManifestDraft("acme", "wf", "e1", (head,), {"a": pointers[0]}, ())
                StateVersioningService().record(draft)
                recorded.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=record)
    thread.start()
    assert recorded.wait(10)
    assert pack_collect(pack.pk, store=store, now=timezone.now(), grace=timedelta(0)) is None
    release.set()
    thread.join(10)
    assert pack_collect(pack.pk, store=store, now=timezone.now(), grace=timedelta(0)) is None
    assert Pack.objects.get().state == Pack.State.LIVE and store.exists(pack.key)


def test_service_record__pointer_missing__dangling_and_stale_at_once():
    draft = ManifestDraft("acme", "wf", "e1", (), {"a": Built().pointers()[0]}, ())
    with pytest.raises(DanglingPointerError) as raised:
        StateVersioningService().record(draft)
    assert isinstance(raised.value, StaleReferenceError)
    assert json.dumps(list(raised.value.digests))


# Uploads a version does not use -------------------------------------------------------------------
def test_commit__declared_upload_the_version_does_not_use__collected(client, bearer, store):
    """It stayed forever: committed live and no longer a candidate, though nothing referenced it
    (a retry that declared more than its entries used left such objects behind)."""
    used, unused = Built(frames=1), Built(frames=1)
    body = {
        "owner_id": "acme",
        "workflow_id": "wf",
        "execution_id": "e1",
        "packs": [used.declared, unused.declared],
    }
    prepared = post(client, PREPARE, body, bearer)
    for pack in (used, unused):
        store.put(pack.key, pack.data)
    entries = {"a": used.pointers()[0]}
    assert (
        post(
            client, f"{PREPARE}/{prepared.json()['txn_id']}/commit", {"entries": entries}, bearer
        ).status_code
        == 200
    )
    assert Pack.objects.get(key=unused.key).gc_candidate_since is not None
    assert Pack.objects.get(key=used.key).gc_candidate_since is None
    gc_sweep(grace=timedelta(0), store=store)
    assert not store.exists(unused.key) and not Pack.objects.filter(key=unused.key).exists()
    assert store.exists(used.key) and Pack.objects.get(key=used.key).state == Pack.State.LIVE
