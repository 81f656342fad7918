"""Compression dictionaries belong to one owner: trained for it, stored under its prefix, used
for its values only, and never resolved for another owner's frames."""

from __future__ import annotations

import pytest

from analemma_sdk.statebag import (
    ForeignDictionaryError,
    LocalFolderStore,
    StateHydrator,
    UnknownDictionaryError,
    get_hydrator,
    train_dictionary,
)
from analemma_sdk.statebag.canonical import canonical_json, sha256_hex
from analemma_sdk.statebag.codec import ZSTD, Compressor, ZstdDictionary
from analemma_sdk.statebag.http_store import ServicePackStore
from analemma_sdk.statebag.keys import dictionary_key, legacy_dictionary_key, pack_key
from analemma_sdk.statebag.packs import build_pack
from analemma_sdk.statebag.pointers import BlobRef

SECRET = "card 4111-1111-1111-1111 cvv 737 for passenger"


class RecordingStore(LocalFolderStore):
    """A real folder store that remembers which keys were read."""

    def __init__(self, root):
        super().__init__(root)
        self.read: list[str] = []

    def get(self, key):
        self.read.append(key)
        return super().get(key)

    def get_range(self, key, offset, length):
        self.read.append(key)
        return super().get_range(key, offset, length)


@pytest.fixture
def store(tmp_path):
    return RecordingStore(tmp_path / "store")


def samples(owner):
    return [canonical_json({"role": "user", "content": f"{owner} {SECRET} {i} " * 20}) for i in range(300)]


def state(owner, n=40):
    return {
        "status": "open",
        "llm_response": {"text": f"{owner} {SECRET} answer " * 500},
        "messages": [{"role": "user", "content": f"{owner} {SECRET} {i} " * 20} for i in range(n)],
    }


def dict_ids(payload):
    """Every dictionary id the payload's pointers name."""
    found = set()

    def walk(value):
        if isinstance(value, dict):
            if isinstance(value.get("x"), str):
                found.add(value["x"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(payload)
    return found


def ids(owner, execution="e1"):
    return {"owner_id": owner, "workflow_id": "airline", "execution_id": execution}


def foreign_frame(store, owner, dictionary):
    """A pack of ``owner`` whose frame was compressed with (and names) ``dictionary``."""
    raw = canonical_json({"role": "user", "content": f"{owner} {SECRET} 7 " * 20})
    encoded = Compressor(ZSTD, 3, dictionary).encode(raw)
    assert encoded.dict_id == dictionary.dict_id
    built = build_pack([(sha256_hex(raw), len(raw), encoded)])
    key = pack_key(owner, built.digest)
    store.put(key, built.data)
    frame = built.frames[0]
    return raw, BlobRef(
        frame.digest, key, frame.offset, frame.length, frame.codec, frame.raw_size, frame.dict_id
    )


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
def test_dehydrate__zstd_dictionary__stored_under_its_owner_and_a_fresh_reader_finds_it(store, batching):
    # Given a zstd hydrator with owner A's dictionary, batched or not
    dictionary = train_dictionary(samples("A"), size=8192, owner_id="A")
    writer = StateHydrator(
        use_batching=batching, inline_frames=False, use_zstd=True, dictionary=dictionary, store=store
    )
    # When A dehydrates
    payload = writer.dehydrate(state("A"), **ids("A"))
    # Then the frames name the dictionary, it is stored under o/A/ only, and a new process reads it
    assert dict_ids(payload) == {dictionary.dict_id}
    assert store.exists(dictionary_key("A", dictionary.dict_id))
    assert dictionary_key("A", dictionary.dict_id).startswith("o/A/")
    assert not store.exists(legacy_dictionary_key(dictionary.dict_id))
    assert StateHydrator(use_batching=True, inline_frames=False, store=store).hydrate(
        payload
    ).to_dict() == state("A")


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
def test_dehydrate__another_owner__never_uses_or_stores_the_dictionary(store, batching):
    # Given a hydrator holding owner A's dictionary
    dictionary = train_dictionary(samples("A"), size=8192, owner_id="A")
    hydrator = StateHydrator(use_batching=batching, use_zstd=True, dictionary=dictionary, store=store)
    # When it dehydrates owner B's state
    payload = hydrator.dehydrate(state("B"), **ids("B"))
    # Then B's frames name no dictionary and nothing is stored for B or at the shared place
    assert dict_ids(payload) == set()
    assert not list(store.list("o/B/d/")) and not list(store.list("dicts/"))
    assert not store.exists(dictionary_key("A", dictionary.dict_id))  # A wrote nothing yet
    assert StateHydrator(use_batching=True, inline_frames=False, store=store).hydrate(
        payload
    ).to_dict() == state("B")


def test_read__frame_of_b_names_a_dictionary__typed_error_and_a_is_never_read(store):
    # Given A's dictionary stored under o/A/ and a pack of B whose frame names it
    dictionary = train_dictionary(samples("A"), size=8192, owner_id="A")
    StateHydrator(
        use_batching=True, inline_frames=False, use_zstd=True, dictionary=dictionary, store=store
    ).dehydrate(state("A"), **ids("A"))
    assert store.exists(dictionary_key("A", dictionary.dict_id))
    _, ref = foreign_frame(store, "B", dictionary)
    store.read.clear()
    # When a fresh reader reads B's frame
    with pytest.raises(UnknownDictionaryError):
        StateHydrator(use_batching=True, inline_frames=False, store=store).read_blobs([ref])
    # Then it looked for the dictionary under B's prefix only
    assert not [key for key in store.read if key.startswith("o/A/")]


def test_read__reader_holding_a_dictionary__refuses_it_for_b(store):
    dictionary = train_dictionary(samples("A"), size=8192, owner_id="A")
    _, ref = foreign_frame(store, "B", dictionary)
    reader = StateHydrator(use_batching=True, inline_frames=False, store=store, dictionaries=[dictionary])
    with pytest.raises(ForeignDictionaryError):
        reader.read_blobs([ref])


def test_read__legacy_shared_dictionary__decodes_for_the_owners_the_reader_allows(store):
    # Given a frame of B written by an earlier version, with its dictionary at dicts/<id>.zdict
    legacy = train_dictionary(samples("B"), size=8192)
    store.put(legacy_dictionary_key(legacy.dict_id), legacy.data)
    raw, ref = foreign_frame(store, "B", legacy)
    # Then a store-only reader still decodes it, and a reader told which owners may use it
    # decodes it for those owners only
    assert StateHydrator(use_batching=True, inline_frames=False, store=store).read_blobs([ref]) == [raw]
    allowed = StateHydrator(
        use_batching=True,
        inline_frames=False,
        store=store,
        legacy_dictionaries=lambda owner, dict_id: (owner, dict_id) == ("B", legacy.dict_id),
    )
    assert allowed.read_blobs([ref]) == [raw]
    _, other = foreign_frame(store, "C", legacy)
    store.read.clear()
    with pytest.raises(UnknownDictionaryError):
        allowed.read_blobs([other])
    assert legacy_dictionary_key(legacy.dict_id) not in store.read
    with pytest.raises(UnknownDictionaryError):
        StateHydrator(
            use_batching=True, inline_frames=False, store=store, legacy_dictionaries=False
        ).read_blobs([ref])


def test_hydrator__dictionary_naming_no_owner__refused(store):
    with pytest.raises(ValueError, match="owner"):
        StateHydrator(use_zstd=True, dictionary=ZstdDictionary(b"d" * 1000), store=store)
    with pytest.raises(ValueError, match="owner"):
        StateHydrator(
            use_batching=True, inline_frames=False, store=store, dictionaries=[ZstdDictionary(b"d" * 1000)]
        )


def test_dictionary_on_a_store_read_through_the_service__refused_at_construction(monkeypatch):
    """A client with no store of its own cannot publish a dictionary (the service takes objects
    only as declared in prepare, and a dictionary is not one of them): it is told so when the
    hydrator is made, not at its first dehydration."""
    dictionary = train_dictionary(samples("acme"), size=4096, owner_id="acme")
    through_service = ServicePackStore("http://127.0.0.1:9", "awk_x", timeout=0.5)
    with pytest.raises(ValueError, match="a store of its own"):
        StateHydrator(
            use_batching=True,
            inline_frames=False,
            use_zstd=True,
            dictionary=dictionary,
            store=through_service,
        )
    # The same through get_hydrator, configured with only the service's URL and a write key
    monkeypatch.setenv("STATEBAG_SERVICE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("STATEBAG_WRITE_KEY", "awk_x")
    monkeypatch.delenv("STATEBAG_STORE_URL", raising=False)
    with pytest.raises(ValueError, match="STATEBAG_STORE_URL"):
        get_hydrator(use_batching=True, inline_frames=False, use_zstd=True, dictionary=dictionary)
    # Without zstd the dictionary is not used, so nothing needs publishing
    assert (
        StateHydrator(
            use_batching=True, inline_frames=False, dictionary=dictionary, store=through_service
        ).mode
        == "batched"
    )
