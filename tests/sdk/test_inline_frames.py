"""Batched: data-plane values stay in the payload as compressed inline frames while it fits,
spill to packs only under budget pressure, and every value keeps its key order."""

import json
import random

import pytest

from analemma_sdk.statebag import (
    META_KEY,
    CorruptBlobError,
    DecompressionBombError,
    MalformedPointerError,
    StateHydrator,
)
from analemma_sdk.statebag.canonical import value_json
from analemma_sdk.statebag.inline import decode_inline, encode_inline, hashed_form
from analemma_sdk.statebag.manifests import manifest_hash
from analemma_sdk.statebag.pointers import parse_pointer

IDS = {"owner_id": "owner-1", "workflow_id": "wf", "execution_id": "exec-1"}
BATCHED = {"use_batching": True, "use_zstd": True}


def message(i: int) -> dict:
    # Keys deliberately not in sorted order.
    return {
        "role": "user" if i % 2 else "assistant",
        "content": f"turn {i}: " + "please rebook " * 20,
        "id": i,
    }


def through_json(payload):
    return json.loads(json.dumps(payload))


def ordered(value) -> str:
    return json.dumps(value)  # key order counts


def test_batched__conversation_stays_inline__no_request_warm_or_cold(counting_store):
    state = {"task_id": 7, "info": {"z": 1, "a": 2}, "messages": [], "llm_response": None}
    payload: dict = {}
    for step in range(1, 20):
        bag = StateHydrator(store=counting_store, **BATCHED).hydrate(through_json(payload))
        bag.to_dict()
        bag["messages"] = [*bag.get("messages", []), message(step)]
        bag["llm_response"] = {"model": "m", "choices": [{"message": message(step), "index": 0}]}
        bag["task_id"], bag["info"] = state["task_id"], state["info"]
        payload = StateHydrator(store=counting_store, **BATCHED).dehydrate(bag, **IDS)
        assert len(value_json(payload)) <= 16 * 1024
    assert sum(counting_store.counts.values()) == 0
    assert payload["messages"]["$sb"] == "z" and payload["info"] == {"z": 1, "a": 2}  # plain JSON
    final = StateHydrator(store=counting_store, **BATCHED).hydrate(through_json(payload)).to_dict()
    assert ordered(final["messages"]) == ordered([message(i) for i in range(1, 20)])


def test_batched__over_budget__largest_field_spills_to_one_pack_and_reads_back_in_order(counting_store):
    rng = random.Random(5)
    noise = [{"z": rng.random(), "k": "".join(rng.choices("abcdefgh", k=300))} for _ in range(200)]
    state = {"status": "RUNNING", "query_results": noise, "llm_response": {"b": 1, "a": "short " * 300}}
    payload = StateHydrator(store=counting_store, **BATCHED).dehydrate(state, **IDS)
    assert len(value_json(payload)) <= 16 * 1024
    assert payload["llm_response"]["$sb"] == "z"  # the small one stays inline
    assert payload["query_results"]["$sb"] in {"list", "blob"}
    assert counting_store.counts["puts"] == 1
    back = StateHydrator(store=counting_store, **BATCHED).hydrate(through_json(payload)).to_dict()
    assert ordered(back) == ordered(state)


def test_batched__read_but_unchanged_fields__keep_their_stored_form(counting_store):
    rng = random.Random(6)
    big = [{"v": "".join(rng.choices("xyzw", k=500))} for _ in range(200)]
    payload = StateHydrator(store=counting_store, **BATCHED).dehydrate({"query_results": big}, **IDS)
    puts = counting_store.counts["puts"]
    bag = StateHydrator(store=counting_store, **BATCHED).hydrate(through_json(payload))
    assert bag["query_results"] == big
    bag["callback_result"] = {"ok": True}
    again = StateHydrator(store=counting_store, **BATCHED).dehydrate(bag, **IDS)
    assert counting_store.counts["puts"] == puts
    assert again["query_results"] == payload["query_results"]


def test_read__chunks_in_many_packs__fetched_in_one_round(counting_store):
    hydrator = StateHydrator(store=counting_store, use_batching=True, inline_frames=False, chunk_target=512)
    payload: dict = {}
    for step in range(12):  # each step seals chunks into a pack of its own
        bag = hydrator.hydrate(through_json(payload))
        bag["messages"] = [*bag.get("messages", []), *[message(step * 4 + i) for i in range(4)]]
        payload = hydrator.dehydrate(bag, **IDS)
    keys = {chunk["k"] for chunk in payload["messages"]["chunks"]}
    assert len(keys) > 4
    threads = set()
    inner_get_range = counting_store.inner.get_range

    def recording(key, offset, length):
        import threading

        threads.add(threading.current_thread().name)
        return inner_get_range(key, offset, length)

    counting_store.inner.get_range = recording
    cold = StateHydrator(store=counting_store, use_batching=True)
    assert len(cold.hydrate(through_json(payload))["messages"]) == 48
    assert len(threads) > 1 and all(name.startswith("statebag-read") for name in threads)


def test_inline_frame__tampered_or_bomb__typed_errors():
    ref = encode_inline(value_json({"b": 1, "a": "x" * 5000}))
    assert parse_pointer(ref.to_json()) == ref
    bad_digest = parse_pointer({**ref.to_json(), "d": "0" * 64})
    with pytest.raises(CorruptBlobError):
        decode_inline(bad_digest, 10**6)
    with pytest.raises(DecompressionBombError):
        decode_inline(parse_pointer({**ref.to_json(), "s": 100}), 10**6)
    with pytest.raises(DecompressionBombError):
        decode_inline(ref, 100)
    with pytest.raises(CorruptBlobError):
        decode_inline(parse_pointer({**ref.to_json(), "b": "!!!!!"}), 10**6)
    with pytest.raises(MalformedPointerError):
        parse_pointer({**ref.to_json(), "c": "zstd"})
    with pytest.raises(MalformedPointerError):
        parse_pointer({**ref.to_json(), "extra": 1})


def test_manifest_hash__covers_an_inline_frame_by_its_digest_not_its_bytes():
    ref = encode_inline(value_json({"b": 1, "a": "x" * 5000}))
    common = {
        "owner_id": "o",
        "workflow_id": "w",
        "execution_id": "e",
        "version": 1,
        "parents": [],
        "cohort": {},
    }
    with_bytes = manifest_hash(entries={"f": ref.to_json()}, **common)
    assert with_bytes == manifest_hash(entries={"f": hashed_form(ref.to_json())}, **common)
    other = encode_inline(value_json({"b": 2}))
    assert with_bytes != manifest_hash(entries={"f": other.to_json()}, **common)


@pytest.mark.parametrize(
    "options",
    [{}, {"use_batching": True}, BATCHED, {**BATCHED, "inline_frames": False}, {"use_zstd": True}],
    ids=["legacy", "batched", "batched_zstd", "packs_only", "legacy_zstd"],
)
def test_key_order__preserved_through_every_path(counting_store, options):
    rng = random.Random(9)
    nested = {"zeta": {"y": 1, "b": [{"k2": 1, "k1": 2}]}, "alpha": 0}
    state = {
        "status": {"z": 1, "a": 2},
        "messages": [
            {"role": "user", "content": "".join(rng.choices("qwerty", k=300)), "a": i} for i in range(80)
        ],
        "llm_response": {"zz": "".join(rng.choices("asdf", k=12_000)), "aa": nested},
        "workflow_config": nested,
    }
    hydrator = StateHydrator(store=counting_store, **options)
    payload = hydrator.dehydrate(state, **IDS)
    assert payload[META_KEY]["v"] == 2
    bag = StateHydrator(store=counting_store, **options).hydrate(through_json(payload))
    assert ordered(bag.to_dict()) == ordered(state)
    # A second step that reads everything and changes one field keeps the order too.
    bag["status"] = {"z": 2, "a": 3}
    again = StateHydrator(store=counting_store, **options).dehydrate(bag, **IDS)
    back = StateHydrator(store=counting_store, **options).hydrate(through_json(again)).to_dict()
    assert ordered(back) == ordered({**state, "status": {"z": 2, "a": 3}})


class FeedCounter:
    """A deflate stream that counts the bytes it is given."""

    def __init__(self, real):
        self.real, self.fed = real, 0

    def compress(self, data):
        self.fed += len(data)
        return self.real.compress(data)

    def flush(self, *mode):
        return self.real.flush(*mode)


def conversation_json(count: int) -> bytes:
    rng = random.Random(count)
    words = ["rebook", "flight", "Seattle", "window", "refund", "baggage", "status", "policy"]
    return value_json(
        [
            {"role": "user", "content": " ".join(rng.choice(words) for _ in range(40)) + f" #{i}"}
            for i in range(count)
        ]
    )


def test_encode_inline__far_too_large__given_up_after_its_first_block(monkeypatch):
    import zlib

    from analemma_sdk.statebag import inline

    streams, real_compressobj = [], zlib.compressobj

    def counting_compressobj(*args):
        streams.append(FeedCounter(real_compressobj(*args)))
        return streams[-1]

    monkeypatch.setattr(inline.zlib, "compressobj", counting_compressobj)
    large = conversation_json(8000)  # ~2.5 MB: no 16 KiB payload holds it
    assert len(large) > 2_000_000
    assert encode_inline(large, limit=16 * 1024) is None
    assert streams[-1].fed <= 16 * 1024
    # A value that fits is still kept whole, and reads back.
    small = conversation_json(200)
    frame = encode_inline(small, limit=16 * 1024)
    assert frame is not None and decode_inline(frame, len(small)) == small
    assert streams[-1].fed == len(small)
