"""The service's shared hydrators: a bounded number of them in a worker, whatever the number of
owners and workflows, with one byte-bounded blob cache between them that never hands one
owner's bytes to another owner's read."""

from __future__ import annotations

import pytest

from analemma_sdk.statebag import BlobNotFoundError
from analemma_sdk.statebag.canonical import canonical_json, sha256_hex
from analemma_sdk.statebag.pointers import BlobRef, parse_pointer
from statebag.services import hydrators
from statebag.services.hydrators import reset_service_hydrators, service_hydrator
from statebag.services.stores import statebag_store

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def service_store(statebag_storage, settings, tmp_path):
    statebag_storage(folder=tmp_path / "svc")
    settings.STATEBAG = {**settings.STATEBAG, "INLINE_FRAMES": False}  # values go to packs
    reset_service_hydrators()
    yield statebag_store()
    reset_service_hydrators()


def test_many_owners_and_workflows__hydrators_and_blob_cache_bounded():
    # Given a worker that served many owners and workflows
    made = {
        (owner, workflow): service_hydrator(f"owner{owner}", f"wf{workflow}")
        for owner in range(20)
        for workflow in range(5)
    }
    # Then it keeps at most 32 of them, the least recently used going first
    assert len(hydrators._hydrators) == 32
    assert service_hydrator("owner19", "wf4") is made[(19, 4)]
    assert service_hydrator("owner0", "wf0") is not made[(0, 0)]
    # And all of them hold their blobs in one cache of 64 MiB, not one each
    assert {id(h.cache.shared) for h in made.values()} == {id(hydrators.BLOB_CACHE)}
    assert hydrators.BLOB_CACHE.max_bytes == 64 * 1024 * 1024


def test_shared_blob_cache__one_owners_blob_never_served_to_another_owner(service_store):
    # Given a blob of acme's, read once by acme's hydrator (so it is cached)
    acme = service_hydrator("acme", "wf")
    payload = acme.dehydrate(
        {"llm_response": {"text": "acme's secret " * 200}},
        owner_id="acme",
        workflow_id="wf",
        execution_id="x1",
    )
    assert acme.hydrate(payload)["llm_response"] == {"text": "acme's secret " * 200}
    ref = parse_pointer(payload["llm_response"])
    assert isinstance(ref, BlobRef)
    raw = canonical_json({"text": "acme's secret " * 200})
    assert ref.digest == sha256_hex(raw) and acme.cache.get(ref.digest) == raw
    # When globex's hydrator reads a pointer naming that digest, at a key of its own
    globex = service_hydrator("globex", "wf")
    forged = BlobRef(
        ref.digest, ref.key.replace("o/acme/", "o/globex/"), ref.offset, ref.length, ref.codec, ref.raw_size
    )
    # Then the cache does not answer it: the store is asked, and has no such object
    assert globex.cache.get(ref.digest) is None
    with pytest.raises(BlobNotFoundError):
        globex.read_blobs([forged])
