"""Generated bad input against the statebag and flag APIs: never a 5xx, and a refusal changes
nothing. Bodies are valid requests with one part replaced by arbitrary JSON, or arbitrary
JSON and bytes outright; paths, headers and CLI options get arbitrary text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analemma_sdk.statebag.keys import pack_key
from analemma_sdk.statebag.packs import FOOTER, HEADER
from audit.models import AuditEntry
from rollout.models import FlagVersion, Revision
from statebag.models import Blob, CommitTransaction, Execution, Manifest, ManifestEntry, Pack, Pin

from ..factories import sdk_key, write_key

pytestmark = pytest.mark.django_db
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples every run: a failure reproduces
)
PREPARE = "/api/v1/statebag/transactions"
DIGEST = "ab" * 32

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Python's json writes these, JSON has no spelling for them: the parser must refuse them.
non_json_numbers = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "1e30", "-0", "2e-400"])


def valid_prepare() -> dict[str, Any]:
    start = HEADER.size
    return {
        "owner_id": "acme",
        "workflow_id": "wf",
        "execution_id": "e1",
        "packs": [
            {
                "key": pack_key("acme", DIGEST),
                "digest": DIGEST,
                "size": start + 100 + FOOTER.size,
                "frames": [
                    {"digest": "cd" * 32, "offset": start, "length": 100, "codec": "raw", "raw_size": 100}
                ],
            }
        ],
    }


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON value one could replace."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


@st.composite
def mutated(draw: Any, valid: dict[str, Any]) -> str:
    path = draw(st.sampled_from(paths(valid)))
    if draw(st.booleans()):
        return json.dumps(replaced(valid, path, draw(json_values)))
    marker = "__replace_me__"
    return json.dumps(replaced(valid, path, marker)).replace(f'"{marker}"', draw(non_json_numbers))


def statebag_rows() -> tuple[int, ...]:
    return (
        CommitTransaction.objects.count(),
        Manifest.objects.count(),
        Execution.objects.count(),
        Pack.objects.count(),
        Blob.objects.count(),
        Pin.objects.count(),
        ManifestEntry.objects.count(),
        AuditEntry.objects.count(),
    )


@pytest.fixture
def auth():
    return {"HTTP_AUTHORIZATION": f"Bearer {write_key('acme')[1]}"}


def answer(response: Any, before: tuple[int, ...], after: tuple[int, ...]) -> None:
    assert response.status_code < 500, response.content[:400]
    if response.status_code >= 400:
        assert response.json()["code"], response.content[:400]
        assert before == after, "a refused request changed something"


@FUZZ
@given(body=mutated(valid_prepare()) | json_values.map(json.dumps) | st.binary(max_size=200))
def test_prepare__generated_bad_input__never_5xx_nothing_changed(client, auth, body):
    before = statebag_rows()
    response = client.post(PREPARE, data=body, content_type="application/json", **auth)
    answer(response, before, statebag_rows())


@pytest.fixture
def prepared(client, auth):
    response = client.post(PREPARE, data=json.dumps(valid_prepare()), content_type="application/json", **auth)
    assert response.status_code == 201, response.content
    return response.json()["txn_id"]


def valid_commit() -> dict[str, Any]:
    pointer = {"$sb": "blob", "v": 1, "d": "cd" * 32, "k": pack_key("acme", DIGEST), "o": HEADER.size}
    pointer.update({"n": 100, "c": "raw", "s": 100})
    return {"entries": {"messages": pointer, "n": 3}, "cohort": {"use_zstd": True, "zstd_level": 3}}


@FUZZ
@given(body=mutated(valid_commit()) | json_values.map(json.dumps))
def test_commit__generated_bad_input__never_5xx_nothing_changed(client, auth, prepared, body):
    before = statebag_rows()
    response = client.post(f"{PREPARE}/{prepared}/commit", data=body, content_type="application/json", **auth)
    assert response.status_code < 500, response.content[:400]
    if response.status_code >= 400:
        assert before == statebag_rows()
        assert CommitTransaction.objects.get(pk=prepared).state == CommitTransaction.State.PREPARED


@FUZZ
@given(execution=st.text(max_size=30), version=st.text(max_size=30))
def test_manifest__generated_path__never_5xx(client, auth, execution, version):
    from urllib.parse import quote

    path = f"/api/v1/statebag/executions/{quote(execution, safe='')}/manifests/{quote(version, safe='')}"
    assert client.get(path, **auth).status_code < 500


@FUZZ
@given(authorization=st.text(max_size=80), etag=st.text(max_size=80))
def test_flagset__generated_headers__never_5xx(client, authorization, etag):
    try:
        response = client.get("/api/v1/flagset", HTTP_AUTHORIZATION=authorization, HTTP_IF_NONE_MATCH=etag)
    except ValueError:
        return  # the test client itself refuses a header with a newline; no server sees it
    assert response.status_code < 500


@pytest.fixture
def prod_key():
    from rollout.models import Environment

    return sdk_key(Environment.objects.get(key="prod"), actor="t")[1]


@FUZZ
@given(
    percentage=st.none() | st.text(max_size=12) | non_json_numbers,
    value=st.none() | st.text(max_size=20) | non_json_numbers | json_values.map(json.dumps),
)
def test_rollout_cli__generated_options__refused_or_valid_never_a_crash(percentage, value):
    options = {"env": "prod"}
    if percentage is not None:
        options["percentage"] = percentage
    if value is not None:
        options["value"] = value
    before = (Revision.objects.count(), FlagVersion.objects.count())
    try:
        call_command("rollout", "set", "zstd_level", **options)
    except CommandError:
        assert (Revision.objects.count(), FlagVersion.objects.count()) == before
