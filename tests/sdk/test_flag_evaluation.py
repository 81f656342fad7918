"""Local evaluation: reasons, targeting, ramps, variants and types, through the public client."""

from __future__ import annotations

import time

import pytest

from analemma_sdk import FlagClient
from analemma_sdk.flags import InvalidDocumentError
from analemma_sdk.flags.document import FlagSet

from ..bucketing_vectors import VECTORS
from .flag_server import document, flag

UNITS = [f"exec-{i}" for i in range(10_000)]


def client_for(**flags):
    snapshot = {"document": document(9, **flags), "fetched_at": time.time()}
    return FlagClient(
        "http://127.0.0.1:9", "ask_prod_" + "k" * 43, cache_path=None, ttl=3600, bootstrap=snapshot
    )


def test_off__flag_default_with_reason_off():
    client = client_for(f=flag(enabled=False, default=False, value=True))
    details = client.bool_details("f", unit="exec-1", default=True)
    assert (details.value, details.reason, details.revision) == (False, "off", 9)


def test_targets__listed_unit__targeted_value():
    client = client_for(f=flag(percentage=0.0, targets=[{"units": ["exec-7"], "value": True}]))
    assert client.bool_details("f", unit="exec-7").reason == "targeted"
    assert client.bool("f", unit="exec-7") is True
    assert client.bool_details("f", unit="exec-8").reason == "default"


@pytest.mark.parametrize(
    "op, values, actual, hit",
    [
        ("in", ["wf-a", "wf-b"], "wf-b", True),
        ("in", ["wf-a"], "wf-c", False),
        ("not_in", ["wf-a"], "wf-c", True),
        ("starts_with", ["eu-"], "eu-west-1", True),
        ("ends_with", ["-1"], "eu-west-2", False),
        ("contains", ["west"], "eu-west-2", True),
        ("contains", ["west"], 42, False),
    ],
)
def test_rules__attribute_operators(op, values, actual, hit):
    rule = {"attribute": "region", "op": op, "values": values, "value": "special"}
    client = client_for(f=flag(kind="string", default="plain", value="rolled", percentage=0.0, rules=[rule]))
    details = client.string_details("f", unit="u", attributes={"region": actual})
    assert (details.value, details.reason) == (("special", "targeted") if hit else ("plain", "default"))


def test_percentage__ramp_up__keeps_everyone_already_in_and_matches_the_share():
    previous: set[str] = set()
    for percentage in (0.0, 1.0, 5.0, 25.0, 50.0, 99.5, 100.0):
        client = client_for(f=flag(percentage=percentage))
        members = {unit for unit in UNITS if client.bool("f", unit=unit)}
        assert previous <= members
        assert abs(len(members) / len(UNITS) - percentage / 100) < 0.015
        previous = members


def test_variants__stable_per_unit_and_moved_minimally_on_reweighting():
    variants = [{"value": "a", "weight": 50_000}, {"value": "b", "weight": 50_000}]
    before = client_for(f=flag(kind="string", default="a", variants=variants))
    again = client_for(f=flag(kind="string", default="a", variants=variants))
    first = {unit: before.string_details("f", unit=unit) for unit in UNITS}
    assert all(again.string("f", unit=unit) == d.value for unit, d in first.items())
    assert {d.variant for d in first.values()} == {"0", "1"} and {d.reason for d in first.values()} == {
        "rollout"
    }
    reweighted = client_for(
        f=flag(
            kind="string",
            default="a",
            variants=[{"value": "a", "weight": 60_000}, {"value": "b", "weight": 40_000}],
        )
    )
    moved = [u for u in UNITS if reweighted.string("f", unit=u) != first[u].value]
    assert all(first[u].value == "b" for u in moved)
    assert abs(len(moved) / len(UNITS) - 0.10) < 0.015


def test_bucketing__same_vectors_as_the_server():
    for case in VECTORS["rollout"]:
        client = client_for(
            **{case["flag_key"]: flag(salt=case["salt"], percentage=float(case["percentage"]))}
        )
        assert client.bool(case["flag_key"], unit=case["unit"]) is case["in"], case


def test_bucket_by__other_attribute__units_sharing_it_share_a_cohort():
    client = client_for(f=flag(percentage=50.0, bucket_by="workflow_id"))
    answers = {client.bool("f", unit=unit, attributes={"workflow_id": "wf-1"}) for unit in UNITS[:200]}
    assert len(answers) == 1


def test_no_unit__only_a_full_rollout_serves_the_value():
    assert client_for(f=flag(percentage=100.0)).bool_details("f").reason == "rollout"
    assert client_for(f=flag(percentage=99.0)).bool_details("f").reason == "default"


def test_type_mismatch__code_default_with_error():
    client = client_for(f=flag(kind="string", default="x", value="y"))
    details = client.bool_details("f", unit="u", default=True)
    assert (details.value, details.reason, details.error) == (True, "error", "TYPE_MISMATCH")
    assert client.number("f", unit="u", default=7) == 7


def test_unknown_flag__code_default_with_flag_not_found():
    details = client_for().json_details("missing", default={"x": 1})
    assert (details.value, details.reason, details.error) == ({"x": 1}, "error", "FLAG_NOT_FOUND")


def test_json__caller_edits_do_not_reach_the_document():
    client = client_for(f=flag(kind="json", default={}, value={"limits": [1, 2]}))
    value = client.json("f", unit="u")
    value["limits"].append(3)
    assert client.json("f", unit="u") == {"limits": [1, 2]}


def test_boolean_switched_on_without_value__serves_true():
    assert client_for(f=flag(value=None)).bool("f", unit="u") is True


@pytest.mark.parametrize(
    "broken",
    [
        {"format": 2, "environment": "prod", "revision": 1, "flags": {}},
        {"format": 1, "environment": "prod", "flags": {}},
        {"format": 1, "environment": "prod", "revision": 1, "flags": []},
        document(1, f=flag(kind="colour")),
        document(1, f=flag(percentage=101)),
        document(1, f=flag(variants=[{"value": True, "weight": 10}])),
        document(1, f=flag(rules=[{"attribute": "a", "op": "regex", "values": [], "value": True}])),
        document(1, f={"kind": "boolean"}),
    ],
)
def test_flagset__malformed_document__typed_error(broken):
    with pytest.raises(InvalidDocumentError):
        FlagSet(broken)
