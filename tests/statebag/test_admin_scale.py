"""The statebag admin's pages at scale: a fixed number of queries whatever the number of rows,
a row count that stops at COUNT_LIMIT instead of counting millions, a page of versions at a
time, and human labels."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.apps import apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from statebag import admin as statebag_admin
from statebag.models import Execution, Manifest, Pack

from ..factories import UserFactory
from ..states import commit_states

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(username="ops", is_staff=True, is_superuser=True))
    return client


def executions(count: int, *, start: int = 0, workflows: int = 3) -> None:
    """``count`` executions, each with one version as its head, written in bulk."""
    now = timezone.now()
    rows = Execution.objects.bulk_create(
        [
            Execution(
                owner_id=f"owner-{n % 7}",
                workflow_id=f"wf-{n % workflows}",
                execution_id=f"exec-{n:06d}",
                status=Execution.Status.FINISHED if n % 4 == 0 else Execution.Status.RUNNING,
            )
            for n in range(start, start + count)
        ],
        batch_size=5000,
    )
    if connection.vendor != "postgresql":  # only PostgreSQL returns the new keys from a bulk insert
        rows = list(Execution.objects.filter(execution_id__in=[r.execution_id for r in rows]))
    heads = Manifest.objects.bulk_create(
        [Manifest(execution=row, version=1, hash=f"{row.execution_id:0>64}"[-64:]) for row in rows],
        batch_size=5000,
    )
    if connection.vendor != "postgresql":
        heads = list(Manifest.objects.filter(execution__in=rows))
    by_execution = {head.execution_id: head for head in heads}
    for row in rows:
        row.head = by_execution[row.pk]
        row.updated_at = now - timedelta(seconds=row.pk)
    Execution.objects.bulk_update(rows, ["head", "updated_at"], batch_size=5000)


def queries(client, name: str, *args, **params) -> tuple[int, str, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse(f"admin:{name}", args=args), params)
    assert response.status_code == 200
    return len(captured), response.content.decode(), [q["sql"] for q in captured.captured_queries]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("statebag_execution_changelist", {}),
        ("statebag_execution_changelist", {"status__exact": "running"}),
        ("statebag_execution_changelist", {"workflow": "wf-1"}),
        ("statebag_execution_changelist", {"q": "exec-0001"}),
        ("statebag_execution_changelist", {"_facets": "True"}),
        ("statebag_manifest_changelist", {}),
        ("statebag_manifest_changelist", {"_facets": "True"}),
        ("statebag_pack_changelist", {}),
        ("statebag_writekey_changelist", {"_facets": "True"}),
    ],
)
def test_changelists__5_then_200_rows__same_number_of_queries(staff_client, name, params):
    # Given five executions
    executions(5)
    few, _, _ = queries(staff_client, name, **params)
    # When there are 200
    executions(195, start=5)
    many, body, sql = queries(staff_client, name, **params)
    # Then the page makes as many queries as before
    assert many == few, (few, many)
    assert many <= 8
    # And none counts the whole table: no facet counts (``_facets``), only the capped row count
    assert not [q for q in sql if "COUNT(" in q.upper() and "LIMIT" not in q.upper()]
    assert "Show counts" not in body and "Hide counts" not in body


def test_changelists__count_columns__not_sortable(staff_client):
    # Ordering by a per-row subquery would compute it for every row of the table
    executions(3)
    Pack.objects.create(key="o/owner-1/p/aa/aa.asbp", owner_id="owner-1", digest="a" * 64, size=10)
    for name, column in (
        ("statebag_manifest_changelist", "parent_count"),
        ("statebag_pack_changelist", "blob_count"),
    ):
        _, body, _ = queries(staff_client, name)
        assert f"column-{column}" in body
        assert not re.search(rf'class="[^"]*sortable[^"]*column-{column}', body), column


def test_execution_changelist__newest_first_with_their_head(staff_client):
    executions(30)
    _, body, _ = queries(staff_client, "statebag_execution_changelist")
    listed = [int(n) for n in re.findall(r">exec-(\d{6})<", body)]
    assert listed == sorted(listed)  # the lowest keys were updated last: they come first
    assert body.count(">v1<") == len(listed) == 30


def test_execution_changelist__past_count_limit__count_stops_and_says_more_than(staff_client, monkeypatch):
    # Given more executions than the admin counts
    monkeypatch.setattr(statebag_admin, "COUNT_LIMIT", 40)
    executions(60)
    # When the list is shown
    _, body, sql = queries(staff_client, "statebag_execution_changelist")
    # Then it says "more than", and no query counted the whole table
    assert "More than 40 executions" in body
    counts = [q for q in sql if "COUNT(" in q.upper()]
    assert counts and all("LIMIT 41" in q.upper() for q in counts), counts


def test_execution_changelist__under_count_limit__exact_count(staff_client):
    executions(12)
    _, body, _ = queries(staff_client, "statebag_execution_changelist")
    assert "12 executions" in body and "More than" not in body


def test_execution_page__5_then_45_versions__bounded_by_one_page(
    staff_client,
    service_store,
    django_assert_max_num_queries,
):
    # Given an execution with five versions, then one with 45
    small = commit_states([{"step": n} for n in range(1, 6)], execution_id="small")
    large = commit_states([{"step": n} for n in range(1, 46)], execution_id="large")
    five, _, _ = queries(staff_client, "statebag_execution_change", small.pk)
    full, body, _ = queries(staff_client, "statebag_execution_change", large.pk)
    older, _, _ = queries(staff_client, "statebag_execution_change", large.pk, versions=2)
    # Then a page of 20 versions costs the same wherever it is, and never more than its bound
    assert full == older
    per_version = (full - five) / 15
    assert per_version <= 3, per_version  # the manifest API's own check, a few queries each
    with django_assert_max_num_queries(20 * 3 + 15):
        staff_client.get(reverse("admin:statebag_execution_change", args=[large.pk]))


def test_labels__every_statebag_model__human_plural(staff_client):
    for model in apps.get_app_config("statebag").get_models():
        singular, plural = str(model._meta.verbose_name), str(model._meta.verbose_name_plural)
        if re.search(r"[^aeiou]y$", singular):  # entry, dictionary: entries, dictionaries
            assert plural == f"{singular[:-1]}ies", plural
    assert str(apps.get_model("statebag", "ManifestEntry")._meta.verbose_name_plural) == "manifest entries"
    body = staff_client.get(reverse("admin:app_list", args=["statebag"])).content.decode()
    assert "entrys" not in body.lower()


def test_admin_site__no_view_site_link_and_product_title(staff_client):
    body = staff_client.get(reverse("admin:statebag_execution_changelist")).content.decode()
    assert "View site" not in body
    assert "| Analemma admin</title>" in body


BULK_EXECUTIONS = """
INSERT INTO statebag_execution
    (owner_id, workflow_id, execution_id, status, created_at, updated_at, enveloped_version)
SELECT 'owner-' || (n %% 7), 'wf-' || (n %% 12), 'exec-' || lpad(n::text, 6, '0'),
       CASE WHEN n %% 4 = 0 THEN 'finished' ELSE 'running' END, now(), now() - n * interval '1 second', 0
FROM generate_series(%s, %s) AS n;
INSERT INTO statebag_manifest
    (execution_id, version, hash, cohort, idempotency_key, raw_bytes, committed_via, retained, pinned, created_at)
SELECT e.id, 1, lpad(e.execution_id, 64, '0'), '{}', '', 0, 'direct', true, false, now()
FROM statebag_execution e WHERE e.head_id IS NULL;
ANALYZE statebag_execution;
ANALYZE statebag_manifest;
UPDATE statebag_execution e SET head_id = m.id
FROM statebag_manifest m WHERE m.execution_id = e.id AND e.head_id IS NULL;
"""


# SQLite runs one statement at a time, and has no generate_series: a recursive count instead.
BULK_EXECUTIONS_SQLITE = [
    """
    WITH RECURSIVE numbers(n) AS (SELECT %s UNION ALL SELECT n + 1 FROM numbers WHERE n < %s)
    INSERT INTO statebag_execution
        (owner_id, workflow_id, execution_id, status, created_at, updated_at, enveloped_version)
    SELECT 'owner-' || (n %% 7), 'wf-' || (n %% 12), 'exec-' || substr('000000' || n, -6, 6),
           CASE WHEN n %% 4 = 0 THEN 'finished' ELSE 'running' END, datetime('now'),
           datetime('now', '-' || n || ' seconds'), 0
    FROM numbers
    """,
    """
    INSERT INTO statebag_manifest
        (execution_id, version, hash, cohort, idempotency_key, raw_bytes, committed_via, retained, pinned,
         created_at)
    SELECT e.id, 1, substr('0000000000000000000000000000000000000000000000000000000000000000'
                           || e.execution_id, -64, 64), '{}', '', 0, 'direct', 1, 0, datetime('now')
    FROM statebag_execution e WHERE e.head_id IS NULL
    """,
    """
    UPDATE statebag_execution SET head_id = m.id
    FROM statebag_manifest m WHERE m.execution_id = statebag_execution.id AND statebag_execution.head_id IS NULL
    """,
]


def plan_of(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def page_query(client, **params) -> str:
    """The statement that read the executions list's page of rows, as sent (its parameters in)."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse("admin:statebag_execution_changelist"), params)
    assert response.status_code == 200
    pages = [
        q["sql"]
        for q in captured.captured_queries
        if 'ORDER BY "statebag_execution"."updated_at" DESC' in q["sql"] and "COUNT(" not in q["sql"]
    ]
    assert len(pages) == 1, pages
    return pages[0]


def test_execution_changelist__100k_executions__same_queries_and_the_indexes_read(staff_client):
    # Given 200 executions, then 100,000
    pages = ({}, {"status__exact": "finished"}, {"workflow": "wf-1"}, {"p": "3"}, {"q": "exec-09999"})
    executions(200, workflows=12)
    few = [queries(staff_client, "statebag_execution_changelist", **params)[0] for params in pages]
    with connection.cursor() as cursor:  # the rest in three statements: a row at a time takes minutes
        if connection.vendor == "postgresql":
            cursor.execute(BULK_EXECUTIONS, [200, 100_000 - 1])
            cursor.execute("ANALYZE statebag_execution; ANALYZE statebag_manifest")
        else:
            for statement in BULK_EXECUTIONS_SQLITE:
                cursor.execute(statement, [200, 100_000 - 1] if "%s" in statement else None)
    assert Execution.objects.count() == 100_000
    # When each page is asked for, it answers in the same queries
    for params, before in zip(pages, few, strict=True):
        many, body, _ = queries(staff_client, "statebag_execution_changelist", **params)
        assert many == before, (params, before, many)
        if not params:
            assert "More than 10000 executions" in body
    # And the dashboard over 100,000 fresh versions answers
    _, body, _ = queries(staff_client, "index")
    assert '<tr data-outcome="direct">' in body
    if connection.vendor != "postgresql":
        return  # SQLite's planner is not the one production runs
    # And the newest executions, all or by status, are read from their indexes, never by a scan
    for params, index in (
        ({}, "execution_recent"),
        ({"status__exact": "finished"}, "execution_status_recent"),
    ):
        plan = plan_of(page_query(staff_client, **params))
        assert "Seq Scan on statebag_execution" not in plan, (params, plan)
        assert index in plan, (params, plan)


ADMIN_INDEXES = {
    "statebag_committransaction": {"transaction_recent", "transaction_state_finished"},
    "statebag_dehydrationjob": {"dehydration_job_recent"},
    "statebag_execution": {"execution_recent", "execution_status_recent", "execution_workflow"},
    "statebag_gcrun": {"gcrun_recent", "gcrun_kind_started"},
    "statebag_manifest": {"manifest_created"},
    "statebag_pack": {"pack_created"},
}
BEFORE_INDEXES = [("statebag", "0011_admin_labels_and_indexes")]


def admin_indexes() -> set[str]:
    with connection.cursor() as cursor:
        return {
            name
            for table, wanted in ADMIN_INDEXES.items()
            for name in connection.introspection.get_constraints(cursor, table)
            if name in wanted
        }


def migrate(targets) -> list[str]:
    """Migrate to ``targets``; the statements it ran."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    with CaptureQueriesContext(connection) as captured:
        executor.migrate(targets)
    return [q["sql"] for q in captured.captured_queries]


@pytest.mark.django_db(transaction=True)
def test_migration_admin_indexes__backward_then_forward__dropped_then_built_without_blocking_writes():
    everything = set().union(*ADMIN_INDEXES.values())
    assert admin_indexes() == everything
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        # Backward: every index dropped
        dropped = [sql for sql in migrate(BEFORE_INDEXES) if "DROP INDEX" in sql.upper()]
        assert admin_indexes() == set()
        # Forward: every index built again
        built = [sql for sql in migrate(leaves) if "CREATE INDEX" in sql.upper()]
        assert admin_indexes() == everything
    finally:
        migrate(leaves)
    assert len(dropped) == len(built) == len(everything)
    # On PostgreSQL each is built and dropped CONCURRENTLY, so writes go on meanwhile
    concurrently = connection.vendor == "postgresql"
    assert all(("CONCURRENTLY" in sql.upper()) == concurrently for sql in [*dropped, *built]), [
        *dropped,
        *built,
    ]
