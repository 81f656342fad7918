"""What one commit costs the database, in statements: at fleet scale round trips to the
database, not its work, bound how many commits a web worker makes a second. Counted on
PostgreSQL (the fleet's database), through the real API, outside any test transaction (so
nothing is counted that production does not send), with the write key looked up in the
database on every request (its cache cold): prepare + commit together take at most ten, any transaction's BEGIN and COMMIT included."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from keys import services as key_services
from statebag.models import CommitTransaction, Manifest, Pin
from statebag.services import statebag_store

from ..factories import write_key
from .test_api_bounds import BASE, PREPARE, Built, post

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("statements are counted on PostgreSQL")


@pytest.fixture
def store(statebag_storage, tmp_path):
    statebag_storage(folder=tmp_path / "service-blobs")
    return statebag_store()


@pytest.fixture
def bearer():
    _, raw = write_key("acme")
    key_services._noted.clear()
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def counted(client, path: str, body: dict[str, Any], bearer: dict[str, str]) -> tuple[Any, list[str]]:
    """The answer, and every statement the request sent, its key's cache cold."""
    cache.clear()
    with CaptureQueriesContext(connection) as captured:
        response = post(client, path, body, bearer)
    assert response.status_code in (200, 201), response.content[:600]
    return response.json(), [query["sql"] for query in captured.captured_queries]


def step(client, bearer, store, parents: list[str], kept: list[dict[str, Any]]) -> dict[str, Any]:
    """One step with new data: prepare (a new pack, the kept blobs pinned), upload, commit."""
    pack = Built(frames=2)
    prepared, prepare_sql = counted(
        client,
        PREPARE,
        {
            "owner_id": "acme",
            "workflow_id": "wf",
            "execution_id": "e1",
            "parents": parents,
            "packs": [pack.declared],
            "reused": [[p["k"], p["d"]] for p in kept],
            "idempotency_key": f"step-{len(parents)}-{len(kept)}",
        },
        bearer,
    )
    store.put(pack.key, pack.data)
    entries = {f"new{i}": p for i, p in enumerate(pack.pointers())}
    entries |= {f"kept{i}": p for i, p in enumerate(kept)}
    entries["status"] = {"z": 1, "a": {"y": 2, "b": 3}}
    answer, commit_sql = counted(
        client,
        f"{PREPARE}/{prepared['txn_id']}/commit",
        {"entries": entries, "cohort": {"use_2pc": True}},
        bearer,
    )
    return {"answer": answer, "pointers": pack.pointers(), "prepare": prepare_sql, "commit": commit_sql}


def test_prepare_and_commit__postgresql__at_most_ten_statements_with_the_key_lookups(client, bearer, store):
    # Given an execution with a version whose blobs the next step keeps
    first = step(client, bearer, store, [], [])
    # When the next step prepares, uploads and commits, each request looking its key up afresh
    second = step(client, bearer, store, [first["answer"]["hash"]], first["pointers"])
    # Then the two requests sent at most ten statements, the key lookups included
    prepare, commit = second["prepare"], second["commit"]
    assert len(prepare) + len(commit) <= 10, "\n".join(prepare + ["--"] + commit)
    # (pinned: prepare is the key, then one statement; commit the key, a read of what to check
    # in the store, then one statement; each statement writes all or nothing by itself, so no
    # BEGIN or COMMIT is sent)
    assert (len(prepare), len(commit)) == (2, 3), "\n".join(prepare + ["--"] + commit)
    assert not any(sql in ("BEGIN", "COMMIT") for sql in prepare + commit)
    assert sum("statebag_writekey" in sql for sql in prepare + commit) == 2
    assert not any(sql.startswith("SAVEPOINT") for sql in prepare + commit)
    # and everything the protocol promises is there
    head = Manifest.objects.get(hash=second["answer"]["hash"])
    assert head.version == 2 and head.committed_via == "2pc"
    assert head.blobs.count() == 4 and head.parent_links.get().parent.hash == first["answer"]["hash"]
    assert CommitTransaction.objects.filter(state="committed").count() == 2
    assert not Pin.objects.exists()


def test_record__postgresql__three_statements_with_the_key_lookup(client, bearer, store):
    # Given an execution with a version
    first = step(client, bearer, store, [], [])
    # When the next step, which uploads nothing, records its version in one call
    entries = {f"kept{i}": p for i, p in enumerate(first["pointers"])} | {"status": "next"}
    body = {
        "owner_id": "acme",
        "workflow_id": "wf",
        "execution_id": "e1",
        "parents": [first["answer"]["hash"]],
        "entries": entries,
        "idempotency_key": "step-2",
    }
    answer, sql = counted(client, f"{BASE}/manifests", body, bearer)
    # Then it sent three statements: the key's lookup, a read of the execution's head, the write
    assert len(sql) == 3, "\n".join(sql)
    assert answer["version"] == 2
    assert Manifest.objects.get(hash=answer["hash"]).blobs.count() == 2
    assert CommitTransaction.objects.count() == 1  # the first step's only


def test_statements__one_write_statement__carries_every_row(client, bearer, store):
    # Given a step's commit
    first = step(client, bearer, store, [], [])
    second = step(client, bearer, store, [first["answer"]["hash"]], first["pointers"])
    # Then its last statement wrote the manifest, entries, parent, links, head, transaction, pins
    write = second["commit"][-1]
    for table in (
        "statebag_manifest",
        "statebag_manifestentry",
        "statebag_manifestparent",
        "statebag_manifest_blobs",
        "statebag_execution",
        "statebag_committransaction",
        "statebag_pack",
        "statebag_pin",
    ):
        assert f'"{table}"' in write, table
