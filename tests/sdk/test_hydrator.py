import json
import subprocess
import sys

import pytest

from analemma_sdk.statebag import (
    META_KEY,
    BlobTooLargeError,
    CorruptBlobError,
    CountingStore,
    LocalFolderStore,
    MalformedPointerError,
    PayloadTooLargeError,
    StateHydrator,
    get_hydrator,
    reset_hydrators,
    train_dictionary,
)
from analemma_sdk.statebag.canonical import canonical_json
from analemma_sdk.statebag.s3 import S3Store

IDS = {"owner_id": "owner-1", "workflow_id": "wf", "execution_id": "exec-1"}
MODES = {
    "legacy": {},
    "batched": {"use_batching": True, "inline_frames": False},
    "batched_zstd": {"use_batching": True, "use_zstd": True, "inline_frames": False},
    "legacy_zstd": {"use_zstd": True},
    "batched_inline": {"use_batching": True, "use_zstd": True},
}


def big_state(n_messages=60):
    return {
        "execution_id": "exec-1",
        "status": "RUNNING",
        "counter": 3,
        "llm_response": {"text": "the answer is " * 800},
        "messages": [{"role": "user", "content": f"message {i} " * 40} for i in range(n_messages)],
        "workflow_config": {"steps": [{"name": f"step-{i}", "retries": i} for i in range(100)]},
        "escaped": {"$sb": "not a pointer", "x": 1},
    }


@pytest.mark.parametrize("mode", [mode for mode in MODES if mode != "batched_inline"])
def test_dehydrate_hydrate__every_mode__round_trips_within_budget(counting_store, mode):
    hydrator = StateHydrator(store=counting_store, **MODES[mode])
    state = big_state()
    payload = hydrator.dehydrate(state, **IDS)
    assert len(canonical_json(payload)) <= hydrator.payload_budget
    assert payload["status"] == "RUNNING"
    assert payload["llm_response"]["$sb"] == "blob"
    assert StateHydrator(store=counting_store, **MODES[mode]).hydrate(payload).to_dict() == state


@pytest.mark.s3
@pytest.mark.parametrize("mode", ["legacy", "batched_zstd"])
def test_dehydrate_hydrate__s3_store__round_trips(s3_client, s3_bucket, mode):
    store = S3Store(s3_bucket, "statebag", client=s3_client)
    hydrator = StateHydrator(store=store, **MODES[mode])
    state = big_state()
    payload = hydrator.dehydrate(state, **IDS)
    assert StateHydrator(store=store, **MODES[mode]).hydrate(payload).to_dict() == state


def test_hydrate__three_event_shapes__same_state(local_store):
    hydrator = StateHydrator(use_batching=True, inline_frames=False, use_zstd=True, store=local_store)
    state = big_state()
    payload = hydrator.dehydrate(state, **IDS)
    for event in ({"state_data": {"bag": payload}}, {"state_data": payload}, payload):
        assert (
            StateHydrator(use_batching=True, inline_frames=False, store=local_store).hydrate(event).to_dict()
            == state
        )


def test_hydrate__batched__lazy_fetches_only_read_fields(local_store):
    payload = StateHydrator(
        use_batching=True, inline_frames=False, use_zstd=True, store=local_store
    ).dehydrate(big_state(), **IDS)
    store = CountingStore(local_store)
    bag = StateHydrator(use_batching=True, inline_frames=False, use_zstd=True, store=store).hydrate(payload)
    assert store.counts["gets"] == 0
    assert bag["llm_response"]["text"].startswith("the answer")
    assert store.counts["gets"] == 1
    assert not bag.has_changes()


def test_state_bag__in_place_edit_and_assignment__tracked(local_store):
    hydrator = StateHydrator(use_batching=True, inline_frames=False, store=local_store)
    bag = hydrator.hydrate(hydrator.dehydrate(big_state(), **IDS))
    bag["messages"].append({"role": "assistant", "content": "new"})
    bag["counter"] = 4
    del bag["status"]
    assert bag.changed_fields() == {"messages", "counter", "status"}


def test_dehydrate__batched_unchanged_fields__write_nothing(counting_store):
    hydrator = StateHydrator(use_batching=True, inline_frames=False, use_zstd=True, store=counting_store)
    payload = hydrator.dehydrate(big_state(), **IDS)
    puts = counting_store.counts["puts"]
    bag = StateHydrator(use_batching=True, inline_frames=False, use_zstd=True, store=counting_store).hydrate(
        payload
    )
    bag.to_dict()  # read everything, change nothing
    bag["counter"] = 4  # small field: stays inline
    again = hydrator.dehydrate(bag, **IDS)
    assert counting_store.counts["puts"] == puts
    assert again["counter"] == 4


def test_dehydrate__batched__at_most_one_pack_per_temperature(counting_store):
    hydrator = StateHydrator(use_batching=True, inline_frames=False, use_zstd=True, store=counting_store)
    result = hydrator.dehydrate_result(big_state(), **IDS)
    assert counting_store.counts["puts"] == len(result.writes) <= 3
    assert {w.kind for w in result.writes} == {"pack"}


def test_dehydrate__legacy__one_object_per_large_data_plane_field_every_time(counting_store):
    hydrator = StateHydrator(store=counting_store)
    state = big_state()
    hydrator.dehydrate(state, **IDS)
    first = counting_store.counts["puts"]
    hydrator.dehydrate(state, **IDS)
    assert first == 2  # llm_response, messages; workflow_config is under 10 KB
    assert counting_store.counts["puts"] == 2 * first  # no dedup on the baseline path


def test_dehydrate__appending_to_a_list__stores_about_one_item(counting_store):
    hydrator = StateHydrator(use_batching=True, inline_frames=False, use_zstd=False, store=counting_store)
    item_bytes = len(canonical_json({"role": "user", "content": "message 0 " * 40}))
    payload = hydrator.dehydrate({"messages": []}, **IDS)
    raw_written = []
    for i in range(200):
        bag = hydrator.hydrate(payload)
        bag["messages"].append({"role": "user", "content": f"message {i} " * 40})
        result = hydrator.dehydrate_result(bag, **IDS)
        payload = result.payload
        raw_written.append(sum(f.raw_size for w in result.writes for f in w.frames))
    total_items = 200 * item_bytes
    assert sum(raw_written) < 1.2 * total_items  # each item stored about once: linear growth
    assert hydrator.hydrate(payload)["messages"][-1]["content"].startswith("message 199")


def test_dehydrate__huge_state__payload_stays_under_budget(local_store):
    hydrator = StateHydrator(use_batching=True, inline_frames=False, use_zstd=True, store=local_store)
    state = {f"field_{i}": {"data": "x" * 900, "i": i} for i in range(40)}  # 36 KB of small fields
    state["huge"] = ["y" * 1000] * 5000  # 5 MB list
    payload = hydrator.dehydrate(state, **IDS)
    assert len(canonical_json(payload)) <= 16 * 1024
    assert hydrator.hydrate(payload).to_dict() == state


def test_dehydrate__legacy__small_fields_stay_inline_whatever_the_total(counting_store):
    # The original offloads by name and size only: 3,000 small fields stay in the payload, and
    # a payload past the orchestrator's hard ceiling is a typed error rather than a failed step.
    state = {f"field_{i}": {"data": "x" * 900, "i": i} for i in range(3000)}
    with pytest.raises(PayloadTooLargeError):
        StateHydrator(store=counting_store).dehydrate(state, **IDS)
    assert counting_store.counts["puts"] == 0


@pytest.mark.parametrize("mode", ["batched_zstd", "batched_inline"])
def test_dehydrate__thousands_of_fields__field_map_spills_and_round_trips(counting_store, mode):
    hydrator = StateHydrator(store=counting_store, **MODES[mode])
    state = {
        f"field_{i}": {"data": "x" * 900, "i": i} for i in range(3000)
    }  # 3,000 pointers alone need ~600 KB
    state["status"] = "RUNNING"
    payload = hydrator.dehydrate(state, **IDS)
    assert len(canonical_json(payload)) <= hydrator.payload_budget
    assert set(payload) == {META_KEY}
    bag = StateHydrator(store=counting_store, **MODES[mode]).hydrate(payload)
    assert bag["status"] == "RUNNING" and bag.to_dict() == state


def test_hydrate__bit_flipped_pack__typed_error_never_wrong_data(local_store):
    hydrator = StateHydrator(use_batching=True, inline_frames=False, use_zstd=True, store=local_store)
    payload = hydrator.dehydrate(big_state(), **IDS)
    pointer = payload["llm_response"]
    path = local_store.root / pointer["k"]
    data = bytearray(path.read_bytes())
    for position in range(pointer["o"], pointer["o"] + pointer["n"], max(1, pointer["n"] // 16)):
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        path.write_bytes(bytes(flipped))
        with pytest.raises(CorruptBlobError):
            StateHydrator(use_batching=True, inline_frames=False, use_zstd=True, store=local_store).hydrate(
                payload
            )["llm_response"]
    path.write_bytes(bytes(data[: pointer["o"] + 3]))  # truncated
    with pytest.raises(CorruptBlobError):
        StateHydrator(use_batching=True, inline_frames=False, store=local_store).hydrate(payload)[
            "llm_response"
        ]


def test_hydrate__pointer_to_other_content__digest_error(local_store):
    hydrator = StateHydrator(use_batching=True, inline_frames=False, use_zstd=True, store=local_store)
    payload = hydrator.dehydrate(big_state(), **IDS)
    payload["llm_response"]["d"] = "0" * 64
    with pytest.raises(CorruptBlobError):
        StateHydrator(use_batching=True, inline_frames=False, store=local_store).hydrate(payload)[
            "llm_response"
        ]


def test_hydrate__declared_size_over_ceiling__refused_before_fetch(counting_store):
    hydrator = StateHydrator(use_batching=True, inline_frames=False, store=counting_store)
    payload = hydrator.dehydrate(big_state(), **IDS)
    payload["llm_response"]["s"] = 10**12
    reader = StateHydrator(
        use_batching=True, inline_frames=False, store=counting_store, max_blob_bytes=1024 * 1024
    )
    gets = counting_store.counts["gets"]
    with pytest.raises(BlobTooLargeError):
        reader.hydrate(payload)["llm_response"]
    assert counting_store.counts["gets"] == gets


@pytest.mark.parametrize(
    "event",
    [
        {
            "x": {
                "$sb": "blob",
                "v": 1,
                "d": "a" * 64,
                "k": "../../secret",
                "o": 0,
                "n": 1,
                "c": "raw",
                "s": 1,
            }
        },
        {"x": {"$sb": "blob"}},
        {META_KEY: "not an object"},
        ["not", "a", "mapping"],
    ],
)
def test_hydrate__malformed_event__typed_error_at_hydrate(local_store, event):
    with pytest.raises(MalformedPointerError):
        StateHydrator(use_batching=True, inline_frames=False, store=local_store).hydrate(event)


def test_dehydrate__hostile_ids__rejected(local_store):
    with pytest.raises(ValueError):
        StateHydrator(store=local_store).dehydrate({}, owner_id="../x", workflow_id="w", execution_id="e")


def test_dehydrate__dictionary__fresh_reader_loads_it_from_store(local_store):
    samples = [canonical_json({"role": "user", "content": f"message {i} " * 30}) for i in range(300)]
    dictionary = train_dictionary(samples, size=8192, owner_id=IDS["owner_id"])
    writer = StateHydrator(
        use_batching=True, inline_frames=False, use_zstd=True, dictionary=dictionary, store=local_store
    )
    assert writer.mode == "batched_zstd_dict"
    state = big_state()
    payload = writer.dehydrate(state, **IDS)
    assert payload["llm_response"].get("x") == dictionary.dict_id
    assert (
        StateHydrator(use_batching=True, inline_frames=False, store=local_store).hydrate(payload).to_dict()
        == state
    )


def test_dehydrate__value_over_blob_ceiling__typed_error(local_store):
    hydrator = StateHydrator(use_batching=True, inline_frames=False, store=local_store, max_blob_bytes=10_000)
    with pytest.raises(BlobTooLargeError):
        hydrator.dehydrate({"big": "x" * 20_000}, **IDS)


def test_get_hydrator__env_and_explicit_arguments(monkeypatch, local_store):
    monkeypatch.setenv("USE_BATCHING", "true")
    monkeypatch.setenv("USE_ZSTD", "1")
    monkeypatch.setenv("ZSTD_LEVEL", "7")
    from_env = get_hydrator(store=local_store)
    assert (from_env.mode, from_env.zstd_level) == ("batched_zstd", 7)
    assert get_hydrator(store=local_store) is from_env
    explicit = get_hydrator(store=local_store, use_zstd=False, zstd_level=2)
    assert explicit is not from_env
    assert (explicit.mode, explicit.zstd_level) == ("batched", 2)
    assert explicit.store is from_env.store
    reset_hydrators()
    assert get_hydrator(store=local_store) is not from_env


def test_get_hydrator__no_env__legacy_on_default_store(monkeypatch, tmp_path):
    for name in ("USE_BATCHING", "USE_ZSTD", "ZSTD_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STATEBAG_STORE_URL", f"file://{tmp_path}/s")
    hydrator = get_hydrator()
    assert hydrator.mode == "legacy"
    assert isinstance(hydrator.store, LocalFolderStore) and hydrator.store.root == (tmp_path / "s").resolve()


def test_import__statebag__loads_no_django_celery_boto3_or_zstandard():
    code = (
        "import sys, json; import analemma_sdk, analemma_sdk.statebag; "
        "print(json.dumps([m for m in ('django','celery','boto3','botocore','zstandard','orjson') if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_hydrate__legacy__reads_every_offloaded_field_every_time(counting_store):
    hydrator = StateHydrator(store=counting_store)
    payload = hydrator.dehydrate(big_state(), **IDS)
    for _ in range(2):
        hydrator.hydrate(payload).to_dict()
    assert counting_store.counts["gets"] == 2 * 2  # no cache on the baseline path


def test_hydrator__compression_level__deprecated_alias_of_zstd_level(local_store):
    with pytest.warns(DeprecationWarning, match="zstd_level"):
        hydrator = StateHydrator(
            use_batching=True, inline_frames=False, use_zstd=True, compression_level=7, store=local_store
        )
    assert hydrator.zstd_level == hydrator.compressor.zstd_level == 7
    assert hydrator.config_tag()["zstd_level"] == hydrator.cohort["zstd_level"] == 7
    with pytest.raises(TypeError):
        StateHydrator(zstd_level=7, compression_level=7, store=local_store)


def test_hydrator__no_arguments__legacy_on_the_default_store(monkeypatch, tmp_path):
    monkeypatch.setenv("STATEBAG_STORE_URL", f"file://{tmp_path}/first")
    reset_hydrators()
    hydrator = StateHydrator()
    assert hydrator.mode == "legacy" and hydrator.store.root == (tmp_path / "first").resolve()
    assert StateHydrator().store is hydrator.store
    monkeypatch.setenv("STATEBAG_STORE_URL", f"file://{tmp_path}/second")
    reset_hydrators()  # forgets the default store too
    assert StateHydrator().store.root == (tmp_path / "second").resolve()


def test_state_bag__pointers__as_hydrated(local_store):
    hydrator = StateHydrator(use_batching=True, inline_frames=False, store=local_store)
    bag = hydrator.hydrate(hydrator.dehydrate(big_state(), **IDS))
    assert set(bag.pointers()) == {"llm_response", "messages", "workflow_config", "escaped"}
    assert bag.pointer("status") is None and bag.pointer("no such field") is None
    assert bag.pointer("llm_response").digest == bag.pointers()["llm_response"].digest
    bag["llm_response"] = "short"
    assert bag.pointer("llm_response") is not None  # what was hydrated, not what was assigned since


def test_known_digests__only_the_owners_own_packs__are_remembered(local_store):
    hydrator = StateHydrator(use_batching=True, inline_frames=False, store=local_store)
    payload = hydrator.dehydrate(big_state(), **IDS)
    reader = StateHydrator(use_batching=True, inline_frames=False, store=local_store)
    reader.hydrate(payload)
    digest = payload["llm_response"]["d"]
    assert reader.known.get("owner-1", digest) is not None
    forged = json.loads(json.dumps(payload))
    forged[META_KEY]["owner"] = "owner-2"  # points at owner-1's packs
    other = StateHydrator(use_batching=True, inline_frames=False, store=local_store)
    other.hydrate(forged)
    assert other.known.get("owner-2", digest) is None
    legacy_payload = StateHydrator(store=local_store).dehydrate(big_state(), **IDS)
    legacy_reader = StateHydrator(use_batching=True, inline_frames=False, store=local_store)
    legacy_reader.hydrate(legacy_payload)
    assert legacy_reader.known.get("owner-1", legacy_payload["llm_response"]["d"]) is None
