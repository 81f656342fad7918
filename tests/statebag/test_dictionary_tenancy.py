"""Compression dictionaries on the service belong to one owner: trained from that owner's blobs
only, stored under ``o/<owner>/``, used for that owner's writes only, and no request of another
owner makes the service read them."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from importlib import import_module

import pytest
from django.apps import apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from analemma_sdk.statebag import (
    LocalFolderStore,
    ManifestDraft,
    PackWrite,
    StateHydrator,
    UnknownDictionaryError,
)
from analemma_sdk.statebag import metrics as sdk_metrics
from analemma_sdk.statebag.canonical import canonical_json, sha256_hex
from analemma_sdk.statebag.codec import ZSTD, Compressor, ZstdDictionary, train_dictionary
from analemma_sdk.statebag.http_store import HttpManifestStore
from analemma_sdk.statebag.keys import dictionary_key, legacy_dictionary_key, pack_key
from analemma_sdk.statebag.packs import build_pack
from analemma_sdk.statebag.pointers import BlobRef
from statebag.models import CommitTransaction, CompressionDictionary, DehydrationJob, Execution
from statebag.services import StateVersioningService, manifest_state
from statebag.services.dictionaries import dictionaries_train_recent, dictionary_train
from statebag.services.hydrators import reset_service_hydrators, service_hydrator
from statebag.services.jobs import job_run, job_submit
from statebag.services.store_audit import store_audit
from statebag.services.stores import statebag_store

from ..factories import write_key

pytestmark = pytest.mark.django_db(transaction=True)

CARD = "4111-1111-1111-1111"


@pytest.fixture(autouse=True)
def service_store(statebag_storage, settings, tmp_path):
    statebag_storage(folder=tmp_path / "svc")
    settings.STATEBAG = {**settings.STATEBAG, "USE_2PC": True, "INLINE_FRAMES": False}
    reset_service_hydrators()
    yield statebag_store()
    reset_service_hydrators()


def secret_state(owner, execution, n=40):
    return {
        "messages": [
            {"role": "user", "content": f"{owner} pays with card {CARD} cvv 737 seat {execution}-{i} " * 12}
            for i in range(n)
        ]
    }


def other_state(owner, execution, n=40):
    return {
        "messages": [
            {"role": "agent", "content": f"{owner}-only-marker rebooking {execution}-{i} lounge " * 12}
            for i in range(n)
        ]
    }


def run_job(owner, execution, state, workflow="airline", parent=""):
    job = job_submit(owner_id=owner, workflow_id=workflow, execution_id=execution, state=state, parent=parent)
    done = job_run(str(job.pk))
    assert done is not None
    return done


def dict_ids(value):
    found = set()
    if isinstance(value, dict):
        if isinstance(value.get("x"), str):
            found.add(value["x"])
        for item in value.values():
            found |= dict_ids(item)
    elif isinstance(value, list):
        for item in value:
            found |= dict_ids(item)
    return found


def frame_of(owner, dictionary, store, text):
    """A pack of ``owner`` holding one frame compressed with (and naming) ``dictionary``."""
    raw = canonical_json({"role": "user", "content": text})
    encoded = Compressor(ZSTD, 3, dictionary).encode(raw)
    assert encoded.dict_id == dictionary.dict_id
    built = build_pack([(sha256_hex(raw), len(raw), encoded)])
    key = pack_key(owner, built.digest)
    store.put(key, built.data)
    frame = built.frames[0]
    ref = BlobRef(frame.digest, key, frame.offset, frame.length, frame.codec, frame.raw_size, frame.dict_id)
    return PackWrite(key, built.digest, len(built.data), built.frames), ref


def record_frame(owner, execution, write, ref):
    """A version of ``owner`` whose field is that frame, recorded in process (no request checks)."""
    StateVersioningService(use_2pc=False).record(
        ManifestDraft(
            owner_id=owner,
            workflow_id="airline",
            execution_id=execution,
            parents=(),
            entries={"note": ref.to_json()},
            packs=(write,),
        )
    )
    return Execution.objects.get(owner_id=owner, execution_id=execution).head


def test_train__two_owners__trained_from_and_used_by_one_owner_only(service_store):
    # Given owners acme (secret-bearing blobs) and globex with the same workflow type
    for n in range(10):
        run_job("acme", f"a{n}", secret_state("acme", n))
        run_job("globex", f"g{n}", other_state("globex", n))
    # When a dictionary is trained for acme
    row = dictionary_train(owner_id="acme", workflow_id="airline", min_samples=20, size=8 * 1024)
    # Then it is acme's, stored under o/acme/ only, and trained from acme's blobs only
    assert row is not None and row.owner_id == "acme" and row.active and not row.legacy
    assert row.key == dictionary_key("acme", row.dict_id) and row.key.startswith("o/acme/d/")
    data = service_store.get(row.key)
    assert sha256_hex(data)[:32] == row.dict_id
    assert b"globex" not in data and b"acme" in data
    assert not service_store.exists(legacy_dictionary_key(row.dict_id))
    assert not list(service_store.list("dicts/"))
    # And acme's new writes use it while globex's never reference it
    acme = run_job("acme", "a-new", secret_state("acme", 99))
    globex = run_job("globex", "g-new", secret_state("globex", 99))
    assert acme.status == globex.status == DehydrationJob.Status.SUCCEEDED
    assert dict_ids(acme.payload) == {row.dict_id}
    assert dict_ids(globex.payload) == set()
    assert not CompressionDictionary.objects.filter(owner_id="globex").exists()


def test_train_recent__each_owner_gets_its_own_dictionary_under_its_prefix(service_store):
    for n in range(6):
        run_job("acme", f"a{n}", secret_state("acme", n, n=60))
        run_job("globex", f"g{n}", other_state("globex", n, n=60))
    rows = {row.owner_id: row for row in dictionaries_train_recent(days=1, size=8 * 1024, min_samples=10)}
    assert set(rows) == {"acme", "globex"}
    for owner, row in rows.items():
        assert row.workflow_id == "airline" and service_store.exists(f"o/{owner}/d/{row.dict_id}.zdict")
    assert b"globex" not in service_store.get(rows["acme"].key)
    assert b"acme" not in service_store.get(rows["globex"].key)


def test_train_recent__one_owners_blob_unreadable__logged_counted_and_the_others_still_trained(
    service_store, caplog
):
    # Given acme (first in order) whose recent versions include a frame naming globex's
    # dictionary, so that acme's samples cannot be read, and initech with readable ones
    for n in range(6):
        run_job("acme", f"a{n}", secret_state("acme", n, n=60))
        run_job("initech", f"i{n}", other_state("initech", n, n=60))
    globex_dict = train_dictionary(
        [canonical_json(other_state("globex", n)["messages"][0]) for n in range(300)],
        size=8192,
        owner_id="globex",
    )
    service_store.put(dictionary_key("globex", globex_dict.dict_id), globex_dict.data)
    write, ref = frame_of("acme", globex_dict, service_store, "acme names globex's dictionary")
    record_frame("acme", "a-bad", write, ref)
    before = sdk_metrics.counters["statebag_dictionary_training_failures_total"]
    # When the daily training runs
    with caplog.at_level(logging.ERROR, logger="statebag.dictionaries"):
        rows = dictionaries_train_recent(days=1, size=8 * 1024, min_samples=10)
    # Then initech still got its dictionary; acme's failure was logged and counted
    assert [(row.owner_id, row.workflow_id) for row in rows] == [("initech", "airline")]
    assert not CompressionDictionary.objects.filter(owner_id="acme").exists()
    assert sdk_metrics.counters["statebag_dictionary_training_failures_total"] == before + 1
    [failure] = [r for r in caplog.records if r.name == "statebag.dictionaries"]
    assert "acme" in failure.getMessage() and "airline" in failure.getMessage()
    assert failure.exc_info and failure.exc_info[0] is UnknownDictionaryError


def test_prepare__frames_name_another_owners_dictionary__refused_nothing_recorded(client, service_store):
    # Given acme's trained dictionary and a write key of globex
    acme_dict = train_dictionary(
        [canonical_json(secret_state("acme", n)["messages"][0]) for n in range(300)],
        size=8192,
        owner_id="acme",
    )
    service_store.put(dictionary_key("acme", acme_dict.dict_id), acme_dict.data)
    CompressionDictionary.objects.create(
        owner_id="acme", workflow_id="airline", dict_id=acme_dict.dict_id, size=8192, samples=300
    )
    _, globex = write_key("globex", actor="ops")
    write, _ = frame_of("globex", acme_dict, service_store, "globex guesses acme's card 4111")
    body = {
        "owner_id": "globex",
        "workflow_id": "airline",
        "execution_id": "g1",
        "packs": [write.to_json()],
    }

    def prepare(payload):
        return client.post(
            "/api/v1/statebag/transactions",
            data=json.dumps(payload),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {globex}",
        )

    # When globex declares a frame naming acme's dictionary
    response = prepare(body)
    # Then it is refused and nothing is recorded
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_request" and "dictionary" in response.json()["error"]
    assert not CommitTransaction.objects.exists()
    # And a dictionary id nobody has gets the very same answer (nothing to learn about others)
    body["packs"][0]["frames"][0]["dict_id"] = "0" * 32
    unknown = prepare(body)
    assert unknown.status_code == 400
    assert unknown.json()["error"].replace("0" * 32, acme_dict.dict_id) == response.json()["error"]


def test_remote_commit__client_dictionary_of_its_own_owner__published_then_accepted(
    live_server, service_store
):
    # Given globex's Lambda with a dictionary of its own, committing over HTTP on the service store
    _, globex = write_key("globex", actor="ops")
    dictionary = train_dictionary(
        [canonical_json(other_state("globex", n)["messages"][0]) for n in range(300)],
        size=8192,
        owner_id="globex",
    )
    hydrator = StateHydrator(
        use_batching=True,
        inline_frames=False,
        use_zstd=True,
        use_2pc=True,
        dictionary=dictionary,
        store=LocalFolderStore(service_store.root),
        manifest_store=HttpManifestStore(live_server.url, globex, timeout=5),
    )
    # When it dehydrates
    result = hydrator.dehydrate_result(
        other_state("globex", 1), owner_id="globex", workflow_id="airline", execution_id="g1"
    )
    # Then its dictionary was published under its own prefix and the service reads the version
    assert result.version == 1 and dict_ids(result.payload) == {dictionary.dict_id}
    assert service_store.exists(dictionary_key("globex", dictionary.dict_id))
    head = Execution.objects.get(owner_id="globex", execution_id="g1").head
    assert manifest_state(head, service_hydrator("globex", "airline")).to_dict() == other_state("globex", 1)


def test_service_reads__frame_names_another_owners_dictionary__typed_failure(service_store):
    # Given acme's dictionary under o/acme/ and a version of globex whose frame names it
    # (recorded in process, past the request checks)
    acme_dict = train_dictionary(
        [canonical_json(secret_state("acme", n)["messages"][0]) for n in range(300)],
        size=8192,
        owner_id="acme",
    )
    service_store.put(dictionary_key("acme", acme_dict.dict_id), acme_dict.data)
    write, ref = frame_of("globex", acme_dict, service_store, f"globex guesses acme's card {CARD}")
    head = record_frame("globex", "g1", write, ref)
    # When the service reads that version, or trains globex's dictionary from it
    # Then it fails with a typed error: the dictionary was looked for under globex's prefix only
    with pytest.raises(UnknownDictionaryError, match="globex"):
        manifest_state(head, service_hydrator("globex", "airline")).to_dict()
    with pytest.raises(UnknownDictionaryError, match="globex"):
        dictionary_train(owner_id="globex", workflow_id="airline", min_samples=1)


def test_legacy_shared_dictionary__readable_by_the_owners_that_used_it_only(service_store):
    # Given an earlier version's state: one dictionary for the workflow at dicts/<id>.zdict,
    # no owner recorded, and frames of acme naming it
    legacy = ZstdDictionary(
        train_dictionary(
            [canonical_json(secret_state("acme", n)["messages"][0]) for n in range(300)], size=8192
        ).data
    )
    service_store.put(legacy_dictionary_key(legacy.dict_id), legacy.data)
    write, ref = frame_of("acme", legacy, service_store, f"acme card {CARD}")
    head = record_frame("acme", "a1", write, ref)
    CompressionDictionary.objects.create(
        owner_id="", workflow_id="airline", dict_id=legacy.dict_id, size=len(legacy.data), samples=300
    )
    # When the migration splits it per owner (transactional tests flush tables: run its function)
    import_module("statebag.migrations.0008_dictionaries_per_owner").split_per_owner(apps, None)
    # Then acme has it as an inactive legacy dictionary and its old version still reads
    row = CompressionDictionary.objects.get()
    assert (row.owner_id, row.legacy, row.active) == ("acme", True, False)
    assert row.key == legacy_dictionary_key(legacy.dict_id)
    assert (
        manifest_state(head, service_hydrator("acme", "airline"))
        .to_dict()["note"]["content"]
        .startswith("acme")
    )
    # And it is never used for a new write
    job = run_job("acme", "a2", secret_state("acme", 2))
    assert job.status == DehydrationJob.Status.SUCCEEDED and dict_ids(job.payload) == set()
    # And another owner's frame naming it does not resolve to it
    write, ref = frame_of("initech", legacy, service_store, "initech guesses")
    other = record_frame("initech", "i1", write, ref)
    with pytest.raises(UnknownDictionaryError, match="initech"):
        manifest_state(other, service_hydrator("initech", "airline")).to_dict()


def test_client_dictionary_of_an_earlier_version__no_row__owner_reads_its_old_versions(service_store):
    # Given an earlier client's own dictionary at dicts/<id>.zdict (no row: the client stored it)
    # and a version of acme whose frame names it
    own = ZstdDictionary(
        train_dictionary(
            [canonical_json(secret_state("acme", n)["messages"][0]) for n in range(300)], size=8192
        ).data
    )
    service_store.put(legacy_dictionary_key(own.dict_id), own.data)
    write, ref = frame_of("acme", own, service_store, f"acme card {CARD}")
    head = record_frame("acme", "a1", write, ref)
    assert not CompressionDictionary.objects.exists()
    # When the migration runs (twice: it is idempotent)
    migration = import_module("statebag.migrations.0008_dictionaries_per_owner")
    migration.split_per_owner(apps, None)
    migration.split_per_owner(apps, None)
    # Then acme has it as an inactive legacy dictionary, and its old version reads on the service
    row = CompressionDictionary.objects.get()
    assert (row.owner_id, row.workflow_id, row.dict_id, row.legacy, row.active) == (
        "acme",
        "airline",
        own.dict_id,
        True,
        False,
    )
    assert (
        manifest_state(head, service_hydrator("acme", "airline"))
        .to_dict()["note"]["content"]
        .startswith("acme card")
    )
    # And another owner naming it does not resolve to it
    write, ref = frame_of("initech", own, service_store, "initech guesses")
    other = record_frame("initech", "i1", write, ref)
    with pytest.raises(UnknownDictionaryError, match="initech"):
        manifest_state(other, service_hydrator("initech", "airline")).to_dict()


def test_legacy_shared_dictionary__client_reading_through_the_service__typed_failure(
    live_server, service_store
):
    """The service serves only objects under the owner's prefix, and the dictionaries of earlier
    versions are not: a client reading through the service cannot decode their frames (the
    service itself can)."""
    legacy = ZstdDictionary(
        train_dictionary(
            [canonical_json(secret_state("acme", n)["messages"][0]) for n in range(300)], size=8192
        ).data
    )
    service_store.put(legacy_dictionary_key(legacy.dict_id), legacy.data)
    write, ref = frame_of("acme", legacy, service_store, f"acme card {CARD}")
    record_frame("acme", "a1", write, ref)
    import_module("statebag.migrations.0008_dictionaries_per_owner").split_per_owner(apps, None)
    _, acme = write_key("acme")
    client = StateHydrator(
        use_batching=True, inline_frames=False, store=HttpManifestStore(live_server.url, acme).pack_store()
    )
    with pytest.raises(UnknownDictionaryError, match="acme"):
        client.read_blobs([ref])
    assert service_hydrator("acme", "airline").read_blobs([ref])[0].startswith(b'{"content":"acme card')


def test_audit_store__dictionaries_under_owner_prefix__not_reported(service_store):
    service_store.put(dictionary_key("acme", "ab" * 16), b"dictionary bytes")
    service_store.put("o/acme/p/aa/ghost.asbp", b"x")
    report = store_audit(grace=timedelta(0))
    assert report.unknown == ["o/acme/p/aa/ghost.asbp"]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_migration__shared_dictionary__one_legacy_row_per_owner_that_used_it_and_back():
    # Given the schema before dictionaries had owners: one dictionary, used by acme and globex,
    # another no frame names
    old = migrate([("statebag", "0007_key_prefix_fits_every_environment")])
    dictionaries = old.get_model("statebag", "CompressionDictionary").objects
    dictionaries.create(workflow_id="airline", dict_id="a" * 32, size=10, samples=5, active=True)
    dictionaries.create(workflow_id="airline", dict_id="b" * 32, size=10, samples=5, active=False)
    Pack = old.get_model("statebag", "Pack")
    for owner in ("acme", "globex", "globex"):
        pack = Pack.objects.create(
            key=f"o/{owner}/p/{Pack.objects.count()}", owner_id=owner, digest="d", size=1
        )
        old.get_model("statebag", "Blob").objects.create(
            pack=pack,
            owner_id=owner,
            digest="e",
            offset=0,
            length=1,
            codec="zstd",
            raw_size=1,
            dict_id="a" * 32,
        )
    # When it migrates
    migrate([("statebag", "0008_dictionaries_per_owner")])
    # Then each owner that used it has it, inactive and legacy; the unused one is gone
    rows = CompressionDictionary.objects.order_by("owner_id")
    assert [(r.owner_id, r.dict_id, r.active, r.legacy) for r in rows] == [
        ("acme", "a" * 32, False, True),
        ("globex", "a" * 32, False, True),
    ]
    # And it migrates back to one row per dictionary
    back = migrate([("statebag", "0007_key_prefix_fits_every_environment")])
    assert list(
        back.get_model("statebag", "CompressionDictionary").objects.values_list("dict_id", flat=True)
    ) == ["a" * 32]
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def test_migration__client_dictionaries_without_rows__one_legacy_row_per_owner_naming_one():
    # Given the schema before dictionaries had owners: frames of acme and globex naming
    # dictionaries their clients stored themselves (no row), one recorded shared dictionary,
    # and frames with no dictionary
    old = migrate([("statebag", "0007_key_prefix_fits_every_environment")])
    dictionaries = old.get_model("statebag", "CompressionDictionary").objects
    dictionaries.create(workflow_id="airline", dict_id="a" * 32, size=10, samples=5, active=True)
    Pack = old.get_model("statebag", "Pack")
    Blob = old.get_model("statebag", "Blob")
    execution = old.get_model("statebag", "Execution").objects.create(
        owner_id="acme", workflow_id="support", execution_id="x1"
    )
    manifest = old.get_model("statebag", "Manifest").objects.create(
        execution=execution, version=1, hash="f" * 64
    )
    for n, (owner, dict_id) in enumerate(
        [("acme", "c" * 32), ("acme", "c" * 32), ("acme", "a" * 32), ("globex", "c" * 32), ("globex", "")]
    ):
        pack = Pack.objects.create(key=f"o/{owner}/p/{n}", owner_id=owner, digest="d", size=1)
        blob = Blob.objects.create(
            pack=pack,
            owner_id=owner,
            digest="e",
            offset=0,
            length=1,
            codec="zstd",
            raw_size=1,
            dict_id=dict_id,
        )
        if owner == "acme":
            manifest.blobs.add(blob)
    # When it migrates
    migrate([("statebag", "0008_dictionaries_per_owner")])
    # Then every owner has a legacy row for each dictionary its frames name, and only those
    rows = CompressionDictionary.objects.order_by("owner_id", "dict_id")
    assert [(r.owner_id, r.dict_id, r.workflow_id, r.active, r.legacy) for r in rows] == [
        ("acme", "a" * 32, "airline", False, True),
        ("acme", "c" * 32, "support", False, True),
        ("globex", "c" * 32, "", False, True),
    ]
    assert {r.key for r in rows} == {legacy_dictionary_key("a" * 32), legacy_dictionary_key("c" * 32)}
    # And back, only the recorded dictionary has a row, as before
    back = migrate([("statebag", "0007_key_prefix_fits_every_environment")])
    assert list(
        back.get_model("statebag", "CompressionDictionary").objects.values_list("dict_id", flat=True)
    ) == ["a" * 32]
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
