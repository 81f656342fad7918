"""The flag-set document's one definition: what the service saves is what SDKs accept."""

from __future__ import annotations

import json

import pytest
from jsonschema import validate

from analemma_sdk.flags.document import FlagSet
from analemma_sdk.flags.spec import (
    MAX_DOCUMENT_BYTES,
    SDK_FLAGS,
    InvalidDocumentError,
    InvalidFlagError,
    check_document,
    check_flag,
    check_publishable,
    check_sdk_flag,
    flag_set_document,
    flag_spec,
    json_schemas,
    sdk_key_compose,
    sdk_key_environment,
)

VALID = {
    "off": flag_spec("boolean", False),
    "ramp": flag_spec("boolean", False, enabled=True, value=True, percentage=5),
    "ab": flag_spec(
        "string",
        "a",
        enabled=True,
        variants=[{"value": "a", "weight": 50_000}, {"value": "b", "weight": 50_000}],
    ),
    "targeted": flag_spec("number", 1, enabled=True, targets=[{"units": ["e-1"], "value": 2.5}]),
    "ruled": flag_spec(
        "json", {}, enabled=True, rules=[{"attribute": "region", "op": "in", "values": ["eu"], "value": [1]}]
    ),
    "seeded": flag_spec("boolean", True, seed=7, salt="s", bucket_by="workflow_id"),
}


def test_flag_spec__built_by_the_builder__accepted_by_the_check_and_the_sdk():
    document = flag_set_document("prod", 3, VALID)
    check_document(document)
    assert set(FlagSet(document, environment="prod").flags) == set(VALID)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"kind": "colour"}, "unknown kind"),
        ({"default": "yes"}, "the default of a boolean flag"),
        ({"value": 1}, "the value of a boolean flag"),
        ({"enabled": "true"}, "enabled must be"),
        ({"percentage": 101}, "percentage"),
        ({"percentage": float("nan")}, "percentage"),
        ({"percentage": True}, "percentage"),
        ({"variants": [{"value": True, "weight": 10}]}, "sum to 100000"),
        ({"variants": [{"value": True}]}, "variants must be"),
        ({"variants": [{"value": "x", "weight": 100_000}]}, "a variant's value"),
        ({"targets": [{"units": "e-1", "value": True}]}, "targets"),
        ({"targets": [{"units": [{"id": 1}], "value": True}]}, "targets"),
        ({"rules": [{"attribute": "a", "op": "regex", "values": [], "value": True}]}, "op must be"),
        ({"rules": [{"op": "in", "values": [], "value": True}]}, "attribute"),
        ({"seed": "7"}, "seed"),
        ({"salt": 5}, "salt"),
    ],
)
def test_check_flag__each_kind_of_mistake__named(changes, words):
    spec = {**flag_spec("boolean", False), **changes}
    with pytest.raises(InvalidFlagError, match=words) as refused:
        check_flag("f", spec)
    assert refused.value.flag == "f"
    with pytest.raises(InvalidDocumentError):
        FlagSet(flag_set_document("prod", 1, {"f": spec}))


@pytest.mark.parametrize("value", [0, 99, 3.5, -1])
def test_check_sdk_flag__zstd_level_out_of_bounds__refused(value):
    spec = flag_spec("number", 3, enabled=True, value=value)
    check_flag("zstd_level", spec)  # a fine number flag...
    with pytest.raises(InvalidFlagError, match="zstd_level"):
        check_sdk_flag("zstd_level", spec)  # ...that the state bag engine would not run with


def test_check_sdk_flag__declared_kind__enforced_and_defaults_within_bounds():
    with pytest.raises(InvalidFlagError, match="boolean"):
        check_sdk_flag("use_zstd", flag_spec("string", "on"))
    for key, declared in SDK_FLAGS.items():
        check_sdk_flag(key, flag_spec(declared["kind"], declared["default"]))
    check_sdk_flag("someone_elses", flag_spec("number", 99))


def test_check_publishable__over_the_sdk_body_limit__refused():
    document = flag_set_document("prod", 1, {"big": flag_spec("string", "x" * 100)})
    check_publishable(document, b"{}")
    with pytest.raises(InvalidDocumentError, match="at most"):
        check_publishable(document, b" " * (MAX_DOCUMENT_BYTES + 1))


def test_sdk_key__composed_then_parsed__names_its_environment():
    secret = "s" * 43
    assert sdk_key_environment(sdk_key_compose("pre_prod", secret)) == "pre_prod"
    assert sdk_key_environment("awk_" + secret) is None
    assert sdk_key_environment(sdk_key_compose("", secret)) is None


def test_json_schemas__describe_what_the_builder_makes():
    schemas = json_schemas()
    document = json.loads(json.dumps(flag_set_document("prod", 3, VALID)))
    validate(document, {**schemas["FlagSet"], "components": {"schemas": schemas}})
    for spec in document["flags"].values():
        validate(spec, schemas["Flag"])


def test_targets__numeric_unit_ids_from_older_flag_sets__accepted_and_matched_as_text():
    spec = flag_spec("boolean", False, enabled=True, percentage=0, targets=[{"units": [123], "value": True}])
    flag_set = FlagSet(flag_set_document("prod", 1, {"f": spec}))
    assert flag_set.flags["f"].evaluate("123", None) == (True, None, "targeted")
