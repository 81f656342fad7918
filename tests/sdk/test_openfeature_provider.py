"""The OpenFeature provider through OpenFeature's own client: values, reasons, error codes."""

from __future__ import annotations

import time

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from analemma_sdk import FlagClient
from analemma_sdk.flags.openfeature_provider import AnalemmaProvider

from .flag_server import document, flag


@pytest.fixture
def of_client():
    doc = document(
        3,
        use_batching=flag(percentage=50.0),
        killed=flag(enabled=False),
        level=flag(kind="number", default=3, value=7),
        ratio=flag(kind="number", default=0.5, value=0.25),
        limits=flag(kind="json", default={}, value={"max": 10}),
        pinned=flag(kind="string", default="a", value="b", targets=[{"units": ["exec-vip"], "value": "vip"}]),
    )
    client = FlagClient(
        "http://127.0.0.1:9",
        "ask_prod_" + "k" * 43,
        cache_path=None,
        ttl=3600,
        bootstrap={"document": doc, "fetched_at": time.time()},
    )
    api.set_provider(AnalemmaProvider(client))
    yield api.get_client()
    api.clear_providers()


def test_rollout__split_reason_and_same_answer_as_the_client(of_client):
    answers = set()
    for i in range(200):
        details = of_client.get_boolean_details("use_batching", False, EvaluationContext(f"exec-{i}"))
        assert details.reason in (Reason.SPLIT, Reason.DEFAULT)
        answers.add(details.value)
    assert answers == {True, False}


def test_reasons__disabled_and_targeting_match(of_client):
    assert of_client.get_boolean_details("killed", True, EvaluationContext("e")).reason == Reason.DISABLED
    pinned = of_client.get_string_details("pinned", "x", EvaluationContext("exec-vip"))
    assert (pinned.value, pinned.reason) == ("vip", Reason.TARGETING_MATCH)


def test_numbers_and_objects(of_client):
    assert of_client.get_integer_value("level", 1, EvaluationContext("e")) == 7
    assert of_client.get_float_value("ratio", 1.0, EvaluationContext("e")) == 0.25
    assert of_client.get_object_value("limits", {}, EvaluationContext("e")) == {"max": 10}
    mismatch = of_client.get_integer_details("ratio", 1, EvaluationContext("e"))
    assert (mismatch.value, mismatch.error_code) == (1, ErrorCode.TYPE_MISMATCH)


def test_errors__flag_not_found_and_type_mismatch_give_the_default(of_client):
    missing = of_client.get_boolean_details("nope", True, EvaluationContext("e"))
    assert (missing.value, missing.reason, missing.error_code) == (
        True,
        Reason.ERROR,
        ErrorCode.FLAG_NOT_FOUND,
    )
    wrong = of_client.get_boolean_details("pinned", True, EvaluationContext("e"))
    assert (wrong.value, wrong.error_code) == (True, ErrorCode.TYPE_MISMATCH)


def test_metadata__revision(of_client):
    details = of_client.get_boolean_details("use_batching", False, EvaluationContext("exec-1"))
    assert details.flag_metadata == {"revision": 3}
