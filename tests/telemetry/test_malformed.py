"""Every malformed batch is a 400 with a code and a message naming the field, and stores
nothing; generated bodies never get a 5xx."""

from __future__ import annotations

import base64
import json

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetry.models import RawBatch

from .conftest import make_batch

pytestmark = pytest.mark.django_db
GOOD_UNITS = base64.b64encode(bytes(range(50)) + bytes(206)).decode()


def entry(**overrides):
    return {"flag": "use_zstd", "variant": "on", "value": True, "reason": "rollout", "count": 1, **overrides}


def cohort(**overrides):
    return {"cohort": {"use_zstd": True}, "counters": {"executions": 1}, "latency_ms": {}, **overrides}


MALFORMED = [
    ({"v": 2}, "v"),
    ({"v": True}, "v"),
    ({"v": "1"}, "v"),
    ({"batch": "abc"}, "batch"),
    ({"batch": "3F2C" * 8}, "batch"),
    ({"batch": None}, "batch"),
    ({"sent_at": "now"}, "sent_at"),
    ({"sent_at": 10**400}, "sent_at"),
    ({"window": [2, 1]}, "window"),
    ({"window": [1]}, "window"),
    ({"window": "1,2"}, "window"),
    ({"window": [1, 10**30]}, "window"),
    ({"window": [True, 2]}, "window"),
    ({"sdk": "python"}, "sdk"),
    ({"sdk": {"name": "x" * 65}}, "sdk.name"),
    ({"dropped": -1}, "dropped"),
    ({"dropped": 1.5}, "dropped"),
    ({"evaluations": {}}, "evaluations"),
    ({"evaluations": [entry()] * 513}, "evaluations"),
    ({"evaluations": ["use_zstd"]}, "evaluations[0]"),
    ({"evaluations": [entry(flag="Use Zstd")]}, "evaluations[0].flag"),
    ({"evaluations": [entry(flag="f" * 65)]}, "evaluations[0].flag"),
    ({"evaluations": [entry(variant=3)]}, "evaluations[0].variant"),
    ({"evaluations": [entry(value="x" * 1100)]}, "evaluations[0].value"),
    ({"evaluations": [{k: v for k, v in entry().items() if k != "value"}]}, "evaluations[0].value"),
    ({"evaluations": [entry(reason="because")]}, "evaluations[0].reason"),
    ({"evaluations": [entry(count=0)]}, "evaluations[0].count"),
    ({"evaluations": [entry(count=10**9 + 1)]}, "evaluations[0].count"),
    ({"evaluations": [entry(count=True)]}, "evaluations[0].count"),
    ({"evaluations": [entry(count=2.0)]}, "evaluations[0].count"),
    ({"evaluations": [entry(units="!!!")]}, "evaluations[0].units"),
    ({"evaluations": [entry(units=base64.b64encode(bytes(255)).decode())]}, "evaluations[0].units"),
    (
        {"evaluations": [entry(units=base64.b64encode(bytes([58]) + bytes(255)).decode())]},
        "evaluations[0].units",
    ),
    ({"evaluations": [entry(units=7)]}, "evaluations[0].units"),
    ({"evaluations": [entry(extra=1)]}, "evaluations[0]"),
    ({"evaluations": [entry(variant="\ud800")]}, "evaluations[0].variant"),
    ({"evaluations": [entry(value={"k": ["\udfff"]})]}, "evaluations[0].value"),
    ({"evaluations": [entry(value={"\ud800": 1})]}, "evaluations[0].value"),
    ({"sdk": {"name": "\ud800"}}, "sdk.name"),
    ({"statebag": [cohort(cohort={"use_zstd": "\ud83d"})]}, "statebag[0].cohort.use_zstd"),
    ({"statebag": [cohort()] * 65}, "statebag"),
    ({"statebag": [cohort(cohort=[1])]}, "statebag[0].cohort"),
    ({"statebag": [cohort(cohort={f"k{i}": 1 for i in range(17)})]}, "statebag[0].cohort"),
    ({"statebag": [cohort(cohort={"use_zstd": 1.5})]}, "statebag[0].cohort.use_zstd"),
    ({"statebag": [cohort(cohort={"use_zstd": {"nested": 1}})]}, "statebag[0].cohort.use_zstd"),
    ({"statebag": [cohort(counters={"executions": -1})]}, "statebag[0].counters.executions"),
    ({"statebag": [cohort(counters={"executions": 10**12 + 1})]}, "statebag[0].counters.executions"),
    ({"statebag": [cohort(counters={f"c{i}": 1 for i in range(65)})]}, "statebag[0].counters"),
    ({"statebag": [cohort(counters={"": 1})]}, "statebag[0].counters"),
    ({"statebag": [cohort(latency_ms={"hydrate": [[3, 1]]})]}, "statebag[0].latency_ms.hydrate[0]"),
    ({"statebag": [cohort(latency_ms={"hydrate": [[131072, 1]]})]}, "statebag[0].latency_ms.hydrate[0]"),
    ({"statebag": [cohort(latency_ms={"hydrate": [[1, -1]]})]}, "statebag[0].latency_ms.hydrate[0]"),
    ({"statebag": [cohort(latency_ms={"hydrate": [[1, 1, 1]]})]}, "statebag[0].latency_ms.hydrate[0]"),
    ({"statebag": [cohort(latency_ms={"hydrate": [[1, 1]] * 33})]}, "statebag[0].latency_ms.hydrate"),
    ({"statebag": [cohort(latency_ms={"hydrate": {"1": 1}})]}, "statebag[0].latency_ms.hydrate"),
    ({"statebag": [cohort(unknown=1)]}, "statebag[0]"),
]


@pytest.mark.parametrize(("change", "field"), MALFORMED, ids=[field for _, field in MALFORMED])
def test_ingest__malformed_field__400_naming_it_and_nothing_stored(post, prod_key, change, field):
    response = post(prod_key, make_batch(**change))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_batch"
    assert error["message"].startswith(f"{field}:"), error["message"]
    assert RawBatch.objects.count() == 0


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "invalid_json"),
        (b"not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'{"v": NaN}', "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'{"a":' + b"[" * 500 + b"]" * 500 + b"}", "too_deep"),
        (json.dumps({"v": 1, "x": [[[[[[[[[[[[]]]]]]]]]]]] * 5}).encode(), "invalid_batch"),
    ],
    ids=["empty", "text", "array", "nan", "bytes", "deep", "unknown-only"],
)
def test_ingest__not_a_json_object__400_with_code(post, prod_key, raw, code):
    response = post(prod_key, None, raw=raw)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_ingest__edge_values_of_the_contract__accepted(post, prod_key):
    body = make_batch(
        evaluations=[
            entry(count=10**9, units=GOOD_UNITS, value={"nested": [1, {"a": None}]}),
            entry(variant=None, value=None, reason="stale"),
            *[entry(flag=f"f{i}", reason="off") for i in range(200)],
        ],
        statebag=[
            cohort(latency_ms={"hydrate": [[1, 0], [65536, 10**12]]}, counters={"custom_thing": 10**12})
        ],
    )
    assert post(prod_key, body).status_code == 202


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["v", "batch", "sent_at", "window", "sdk", "dropped", "evaluations", "statebag"]
FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


@FUZZ
@given(
    field=st.sampled_from(FIELDS),
    value=JSON,
    path=st.sampled_from(["top", "evaluation", "cohort", "latency"]),
)
def test_ingest__fuzzed_part__never_5xx_and_a_refusal_stores_nothing(post, prod_key, field, value, path):
    body = make_batch()
    if path == "top":
        body[field] = value
    elif path == "evaluation":
        body["evaluations"][0][field if field in ("v", "batch") else "value"] = value
        body["evaluations"][0][["flag", "variant", "reason", "count", "units"][len(field) % 5]] = value
    elif path == "cohort":
        body["statebag"][0]["cohort"] = {"use_zstd": value} if len(field) % 2 else value
        body["statebag"][0]["counters"] = value if len(field) % 3 == 0 else {"executions": 1}
    else:
        body["statebag"][0]["latency_ms"] = {"hydrate": value}
    with transaction.atomic():
        before = RawBatch.objects.count()
        response = post(prod_key, body)
        assert response.status_code in (202, 400), response.content
        if response.status_code == 400:
            assert RawBatch.objects.count() == before
            assert response.json()["error"]["message"]
        transaction.set_rollback(True)


@FUZZ
@given(data=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_ingest__arbitrary_bytes__400_never_5xx(post, prod_key, data):
    response = post(prod_key, None, raw=data)
    assert response.status_code == 400
    assert RawBatch.objects.count() == 0
