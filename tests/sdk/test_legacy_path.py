"""The legacy path is the original system's: pinned request by request on a small fixture."""

import json

import pytest

from analemma_sdk.statebag import CountingStore, StateHydrator
from analemma_sdk.statebag.policy import DATA_PLANE_FIELDS, LEGACY_OFFLOAD_BYTES

IDS = {"owner_id": "owner-1", "workflow_id": "wf", "execution_id": "exec-1"}


def text_of(size: int) -> str:
    """A JSON string value whose encoding is exactly ``size`` bytes."""
    return "a" * (size - 2)


def through_json(payload):
    return json.loads(json.dumps(payload))  # as the orchestrator hands it on


@pytest.mark.parametrize(
    ("name", "size", "offloaded"),
    [
        ("messages", LEGACY_OFFLOAD_BYTES + 1, True),
        ("messages", LEGACY_OFFLOAD_BYTES, False),  # over 10 KB, not at it
        ("llm_response", 200_000, True),
        ("documents", 200_000, False),  # not a data-plane field: inline whatever its size
        ("status", LEGACY_OFFLOAD_BYTES + 1, False),
    ],
)
def test_legacy__offloads_only_data_plane_fields_over_10_kb(counting_store, name, size, offloaded):
    payload = StateHydrator(store=counting_store).dehydrate({name: text_of(size)}, **IDS)
    assert isinstance(payload[name], dict) is offloaded
    assert counting_store.counts["puts"] == int(offloaded)


def test_legacy__every_data_plane_name_is_offloadable():
    assert {
        "workflow_config",
        "partition_map",
        "segment_manifest",
        "current_state",
        "final_state",
        "state_history",
        "parallel_results",
        "branch_results",
        "callback_result",
        "llm_response",
        "query_results",
        "step_history",
        "messages",
        "thought_signature",
        "thinking_process",
        "thought_steps",
    } == DATA_PLANE_FIELDS


def test_legacy__object_is_uncompressed_json_under_a_new_key_each_time(local_store):
    counting = CountingStore(local_store)
    value = {"z": 1, "a": text_of(LEGACY_OFFLOAD_BYTES)}
    first = StateHydrator(store=counting).dehydrate({"messages": value}, **IDS)
    second = StateHydrator(store=counting).dehydrate({"messages": value}, **IDS)
    assert first["messages"]["k"] != second["messages"]["k"]  # no dedup: a new object each time
    stored = (local_store.root / first["messages"]["k"]).read_bytes()
    assert json.loads(stored) == value and stored.startswith(b'{"z":1,"a":')  # plain JSON, in order
    assert first["messages"]["c"] == "raw"


def test_legacy__read_fields_are_written_again_untouched_ones_keep_their_pointer(counting_store):
    big = text_of(LEGACY_OFFLOAD_BYTES + 100)
    state = {"messages": [big], "llm_response": big, "query_results": big}
    payload = through_json(StateHydrator(store=counting_store).dehydrate(state, **IDS))
    assert counting_store.counts["puts"] == 3
    counting_store.reset()
    # A new invocation reads two fields, changes one of them and leaves the third unread.
    bag = StateHydrator(store=counting_store).hydrate(payload)
    assert counting_store.counts["gets"] == 0  # lazy: nothing fetched by hydrate itself
    bag["messages"].append("next")
    assert bag["llm_response"] == big
    assert counting_store.counts["gets"] == 2  # one whole-object GET per field read
    after = StateHydrator(store=counting_store).dehydrate(bag, **IDS)
    assert counting_store.counts["puts"] == 2  # both read fields written again in full
    assert after["query_results"] == payload["query_results"]  # never read: same pointer
    assert after["llm_response"]["k"] != payload["llm_response"]["k"]


def test_legacy__appending_costs_the_whole_list_at_every_step(counting_store):
    hydrator = StateHydrator(store=counting_store)
    payload: dict = {}
    written = []
    for _ in range(1, 8):
        bag = hydrator.hydrate(through_json(payload))
        messages = bag.get("messages", [])
        messages.append(text_of(4000))
        bag["messages"] = messages
        before = counting_store.counts["puts_bytes"]
        payload = hydrator.dehydrate(bag, **IDS)
        written.append(counting_store.counts["puts_bytes"] - before)
    # Nothing until the list passes 10 KB, then the whole list each time: O(n^2) bytes.
    assert written[:2] == [0, 0]
    assert all(later > earlier for earlier, later in zip(written[2:], written[3:], strict=False))
    assert written[-1] > 6 * 4000


def test_legacy__no_cache_across_invocations(counting_store):
    payload = StateHydrator(store=counting_store).dehydrate({"messages": [text_of(20_000)]}, **IDS)
    hydrator = StateHydrator(store=counting_store)  # one warm container, two invocations
    for _ in range(2):
        hydrator.hydrate(through_json(payload))["messages"]
    assert counting_store.counts["gets"] == 2


def test_legacy__size_measured_as_the_originals_default_json(counting_store):
    # Compact, this list is under 10 KiB; with the standard library's default separators (what
    # the original measures) it is over, so the original offloads it and so must we.
    value = [{"k": i, "v": "x" * 40} for i in range(175)]
    compact = len(json.dumps(value, separators=(",", ":")))
    assert compact <= LEGACY_OFFLOAD_BYTES < len(json.dumps(value))
    payload = StateHydrator(store=counting_store).dehydrate({"messages": value}, **IDS)
    assert payload["messages"]["$sb"] == "blob" and counting_store.counts["puts"] == 1
