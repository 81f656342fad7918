"""A list cut into chunks takes its items' JSON from one encoding per item, without searching
each item again for NaN: the whole list's JSON was searched already, and the items are used
only when they join to it byte for byte."""

import random

import pytest

from analemma_sdk.statebag import InvalidValueError, canonical
from analemma_sdk.statebag.canonical import canonical_json, item_value_jsons, value_json
from analemma_sdk.statebag.chunking import join_items
from analemma_sdk.statebag.planning import ChunkedList, plan_value
from analemma_sdk.statebag.policy import BATCHED, PlanningConfig


def messages(count: int) -> list[dict]:
    rng = random.Random(count)
    return [
        {"role": rng.choice(["user", "assistant", "tool"]), "content": f"turn {i} " * 20, "name": None}
        for i in range(count)
    ]


def count_searches(monkeypatch) -> list[object]:
    searched: list[object] = []
    real = canonical._has_non_finite
    monkeypatch.setattr(canonical, "_has_non_finite", lambda value: searched.append(value) or real(value))
    return searched


def test_item_value_jsons__plain_list__each_items_json_and_no_search(monkeypatch):
    items = messages(50)
    whole = value_json(items)
    searched = count_searches(monkeypatch)
    parts = item_value_jsons(items, whole)
    assert searched == []
    assert parts == [value_json(item) for item in items] and join_items(parts) == whole


@pytest.mark.parametrize(
    "items",
    [
        [{"big": 2**70, "n": None}, {"a": 1.5}],  # orjson refuses the big integer: the stdlib writes it
        [{"z": 1, "a": None}, {"y": [None, 2]}],  # checked against a whole that is not their JSON
    ],
    ids=["stdlib-whole", "other-whole"],
)
def test_item_value_jsons__whole_not_joined_from_orjson_items__each_encoded_whole(items):
    whole = value_json(items) if "big" in items[0] else canonical_json(items)
    assert item_value_jsons(items, whole) == [value_json(item) for item in items]


def test_item_value_jsons__whole_that_hides_a_nan__still_refused():
    items = [{"v": None}, {"v": float("nan")}]
    with pytest.raises(InvalidValueError):
        item_value_jsons(items, b'[{"v":null},{"v":NaN}]')  # not what orjson writes: encoded whole


def test_plan_value__chunked_list__searched_once(monkeypatch):
    config = PlanningConfig(policy=BATCHED, inline_frames=False, chunk_target=1024)
    items = messages(60)
    searched = count_searches(monkeypatch)
    plan = plan_value("messages", items, config)
    assert isinstance(plan, ChunkedList) and len(plan.chunks) > 1
    assert searched == [items]  # the whole list, not each of its items again
    assert plan.item_bytes == [value_json(item) for item in items]
