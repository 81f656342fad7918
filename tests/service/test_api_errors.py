"""Every answer under /api/ that is an error is JSON with a message and a stable code: the
typed layer's refusals, and the ones Django answers by itself (unknown path, wrong method,
CSRF, a crash). Malformed bodies are 400s that change nothing."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from statebag.models import CommitTransaction, DehydrationJob
from statebag.services import remote

from ..factories import UserFactory, write_key

pytestmark = pytest.mark.django_db
PREPARE = "/api/v1/statebag/transactions"


def error_of(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and isinstance(body["error"], str) and body["error"]
    return body


@pytest.fixture
def bearer():
    _, raw = write_key("acme")
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def post_json(client, path, body, **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **headers)


@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("get", "/api/v1/nothing-here", 404, "not_found"),
        ("get", "/api/v1/", 404, "not_found"),
        ("post", "/api/v1/flagset", 405, "method_not_allowed"),
        ("get", PREPARE, 405, "method_not_allowed"),
        ("delete", "/api/v1/statebag/jobs", 405, "method_not_allowed"),
    ],
)
def test_api__errors_django_answers_itself__json_with_code(client, method, path, status, code):
    error_of(getattr(client, method)(path), status, code)


def test_api__405__keeps_its_allow_header(client):
    assert "GET" in client.post("/api/v1/flagset")["Allow"]


def test_flagset__post_from_a_client_that_enforces_csrf__405_not_a_csrf_refusal():
    error_of(Client(enforce_csrf_checks=True).post("/api/v1/flagset"), 405, "method_not_allowed")


def test_api__session_post_without_csrf_token__403_json():
    client = Client(enforce_csrf_checks=True)
    client.force_login(UserFactory(permissions=["statebag.add_dehydrationjob"]))
    body = {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "state": {}}
    error_of(post_json(client, "/api/v1/statebag/jobs", body), 403, "forbidden")
    assert not DehydrationJob.objects.exists()


def test_api__jobs_without_session_or_permission__401_then_403(client):
    body = {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "state": {}}
    assert error_of(post_json(client, "/api/v1/statebag/jobs", body), 401, "unauthorized")
    client.force_login(UserFactory())
    error_of(post_json(client, "/api/v1/statebag/jobs", body), 403, "forbidden")


@pytest.mark.parametrize(
    "body, code",
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"owner_id": NaN}', "invalid_json"),
        ("[" * 100_000 + "]" * 100_000, "too_deep"),
        ('{"a":' * 201 + "1" + "}" * 201, "too_deep"),
        ({"owner_id": "acme", "workflow_id": "wf"}, "invalid_request"),
        ({"owner_id": "acme", "workflow_id": "../x", "execution_id": "e1"}, "invalid_request"),
        (
            {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "parents": ["nope"]},
            "invalid_request",
        ),
        (
            {
                "owner_id": "acme",
                "workflow_id": "wf",
                "execution_id": "e1",
                "packs": [{"key": "o/acme/p/aa/x.asbp", "digest": "a" * 64, "size": 10, "frames": [{}]}],
            },
            "invalid_request",
        ),
    ],
)
def test_prepare__malformed_body__400_with_code_and_nothing_recorded(client, bearer, body, code):
    error_of(post_json(client, PREPARE, body, **bearer), 400, code)
    assert not CommitTransaction.objects.exists()


def test_prepare__body_over_the_upload_limit__413_and_nothing_recorded(client, bearer, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "idempotency_key": "x" * 2000}
    error_of(post_json(client, PREPARE, body, **bearer), 413, "payload_too_large")
    assert not CommitTransaction.objects.exists()


def test_prepare__invalid_field__named_in_the_answer(client, bearer):
    body = {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "upload": "carrier-pigeon"}
    answer = error_of(post_json(client, PREPARE, body, **bearer), 400, "invalid_request")
    assert ["body", "upload"] in [problem["loc"] for problem in answer["problems"]]
    assert "upload:" in answer["error"]


def test_api__a_crash__500_json_without_details(client, bearer, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(remote, "prepare", crash)
    body = {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1"}
    answer = error_of(post_json(client, PREPARE, body, **bearer), 500, "server_error")
    assert "secret" not in json.dumps(answer)


def test_jobs__parent_null__accepted_as_no_parent(client):
    client.force_login(UserFactory(permissions=["statebag.add_dehydrationjob"]))
    body = {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "state": {"a": 1}, "parent": None}
    assert post_json(client, "/api/v1/statebag/jobs", body).status_code == 202


def test_jobs__detail_of_an_id_that_is_no_job_id__404(client):
    client.force_login(UserFactory(permissions=["statebag.view_dehydrationjob"]))
    error_of(client.get("/api/v1/statebag/jobs/not-a-uuid"), 404, "not_found")
    error_of(client.get("/api/v1/statebag/jobs/00000000-0000-0000-0000-000000000000"), 404, "not_found")
