import pytest
from django.core.files.storage import storages

from analemma_sdk.statebag import LocalFolderStore, StateHydrator
from analemma_sdk.statebag.s3 import S3Store
from statebag.services.stores import DjangoStorageStore, store_for_storage


def test_store_for_storage__filesystem__local_folder_at_its_location(statebag_storage, tmp_path):
    statebag_storage(folder=tmp_path / "blobs")
    store = store_for_storage(storages["statebag"])
    assert isinstance(store, LocalFolderStore) and store.root == (tmp_path / "blobs").resolve()


@pytest.mark.s3
def test_store_for_storage__s3_storage__engine_round_trips_through_django_storages(
    statebag_storage, s3_endpoint, s3_bucket, s3_client
):
    statebag_storage(bucket=s3_bucket, endpoint=s3_endpoint)
    storage = storages["statebag"]
    store = store_for_storage(storage)
    assert isinstance(store, S3Store) and store.prefix == "svc/"
    hydrator = StateHydrator(use_batching=True, inline_frames=False, use_zstd=True, store=store)
    state = {"messages": [{"text": f"turn {i} " * 300} for i in range(30)]}
    payload = hydrator.dehydrate(state, owner_id="acme", workflow_id="wf", execution_id="e1")
    assert (
        StateHydrator(use_batching=True, inline_frames=False, store=store).hydrate(payload).to_dict() == state
    )
    keys = [item["Key"] for item in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys and all(key.startswith("svc/o/acme/p/") and key.endswith(".asbp") for key in keys)


def test_django_storage_store__generic_storage__ranged_reads_and_overwrite(tmp_path):
    from django.core.files.storage import FileSystemStorage

    store = DjangoStorageStore(FileSystemStorage(location=str(tmp_path)))
    store.put("o/a/p/aa/obj", b"0123456789")
    store.put("o/a/p/aa/obj", b"abcdefghij")  # same key again: replaced, not renamed
    assert store.get("o/a/p/aa/obj") == b"abcdefghij"
    assert store.get_range("o/a/p/aa/obj", 2, 3) == b"cde"
    assert list(store.list("o/a")) == ["o/a/p/aa/obj"]
