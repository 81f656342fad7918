"""Inline values keep their key order: agents replay stored values into LLM prompts, where the
order is part of the content. Entries, and a job's state and payload, are stored as JSON text
(PostgreSQL's jsonb sorted every object's keys), parsed from requests and served in the order
sent; migration 0009 converted the rows stored before as they were."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from statebag.models import DehydrationJob, Manifest, ManifestEntry
from statebag.services.jobs import job_submit

from ..factories import write_key
from .test_api_bounds import BASE, PREPARE, post

pytestmark = pytest.mark.django_db(transaction=True)
# Out of order at every level, and the fields themselves too.
STATE = {"zeta": {"z": 1, "a": {"y": 2, "b": 3}}, "alpha": [{"role": "user", "content": "hi"}], "mid": 0.5}


@pytest.fixture
def bearer():
    return {"HTTP_AUTHORIZATION": f"Bearer {write_key('acme')[1]}"}


def keys_in_order(text: str) -> list[Any]:
    """Every object's keys in the order the JSON text has them, depth first."""
    found: list[Any] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found.append([key for key, _ in pairs])
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return found


@pytest.mark.parametrize("path", ["commit", "record"])
def test_manifest__inline_values_out_of_key_order__served_in_the_order_sent(client, bearer, path):
    # Given a version whose inline values have keys out of sorted order, committed over HTTP
    if path == "commit":
        prepared = post(
            client, PREPARE, {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1"}, bearer
        )
        response = post(client, f"{PREPARE}/{prepared.json()['txn_id']}/commit", {"entries": STATE}, bearer)
    else:
        body = {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "entries": STATE}
        response = post(client, f"{BASE}/manifests", body, bearer)
    assert response.status_code in (200, 201), response.content
    # When the manifest is read back
    served = client.get(f"{BASE}/executions/e1/manifests/head", **bearer)
    assert served.status_code == 200, served.content
    # Then its entries come in the order sent, fields and nested keys alike
    text = served.content.decode()
    entries = json.loads(text)["entries"]
    assert list(entries) == ["zeta", "alpha", "mid"]
    assert keys_in_order(json.dumps(entries)) == keys_in_order(json.dumps(STATE))
    assert text.index('"z"') < text.index('"a"') < text.index('"y"') < text.index('"b"')


def test_entries__stored_as_text_in_the_order_sent(client, bearer):
    body = {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "entries": STATE}
    assert post(client, f"{BASE}/manifests", body, bearer).status_code == 201
    with connection.cursor() as cursor:
        cursor.execute("SELECT field, stored FROM statebag_manifestentry ORDER BY id")
        rows = cursor.fetchall()
    assert [field for field, _ in rows] == ["zeta", "alpha", "mid"]
    assert rows[0][1] == '{"z":1,"a":{"y":2,"b":3}}'  # the text itself, as value_json writes it
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE (table_name, column_name) IN "
                "(('statebag_manifestentry', 'stored'), ('statebag_dehydrationjob', 'state'), "
                "('statebag_dehydrationjob', 'payload'))"
            )
            assert {row[2] for row in cursor.fetchall()} == {"text"}


def test_dehydration_job__state_and_payload__keep_their_key_order():
    job = job_submit(owner_id="acme", workflow_id="wf", execution_id="e1", state=STATE)
    DehydrationJob.objects.filter(pk=job.pk).update(payload={"z": 1, "__statebag__": {"v": 1}, "a": 2})
    job = DehydrationJob.objects.get(pk=job.pk)
    assert keys_in_order(json.dumps(job.state)) == keys_in_order(json.dumps(STATE))
    assert list(job.payload) == ["z", "__statebag__", "a"]


def test_stored_text_that_is_not_json__integrity_error_not_a_crash(client, bearer):
    body = {"owner_id": "acme", "workflow_id": "wf", "execution_id": "e1", "entries": {"a": 1}}
    assert post(client, f"{BASE}/manifests", body, bearer).status_code == 201
    with connection.cursor() as cursor:
        cursor.execute("UPDATE statebag_manifestentry SET stored = 'not json'")
    answer = client.get(f"{BASE}/executions/e1/manifests/head", **bearer)
    assert answer.status_code == 500 and answer.json()["code"] == "integrity_error"


def test_migration_0009__rows_stored_before__converted_as_they_were():
    # Given the schema before 0009, with rows stored by it
    executor = MigrationExecutor(connection)
    before = [("statebag", "0008_dictionaries_per_owner")]
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    execution = old.get_model("statebag", "Execution").objects.create(
        owner_id="acme", workflow_id="wf", execution_id="e1"
    )
    manifest = old.get_model("statebag", "Manifest").objects.create(
        execution=execution, version=1, hash="a" * 64
    )
    old.get_model("statebag", "ManifestEntry").objects.create(
        manifest=manifest, field="f", kind="inline", stored={"b": [1, 2.5, None, True], "a": "é"}
    )
    old.get_model("statebag", "DehydrationJob").objects.create(
        owner_id="acme", workflow_id="wf", execution_id="e1", state={"s": {"k": 1}}, payload=None
    )
    # When 0009 (and what follows) is applied
    executor = MigrationExecutor(connection)
    executor.migrate(latest)
    # Then the values read back are the values stored (in whatever order jsonb left them)
    entry = ManifestEntry.objects.get()
    assert entry.stored == {"a": "é", "b": [1, 2.5, None, True]}
    job = DehydrationJob.objects.get()
    assert (job.state, job.payload) == ({"s": {"k": 1}}, None)
    Manifest.objects.all().delete()
