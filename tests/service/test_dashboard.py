"""The admin's home dashboard: the state bag's health from the rows real commits, aborts, reaps
and GC runs leave, the rollout's plans, flags and changes, in a fixed number of queries."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from analemma.dashboard import dashboard_build
from analemma_sdk.statebag import StateHydrator
from analemma_sdk.statebag.manifests import PrepareRequest
from rollout import services as rollout_services
from rollout.models import Environment, RolloutPlan
from statebag.models import CommitTransaction, GCRun, Manifest, Pack
from statebag.services import StateVersioningService, statebag_store
from statebag.services.collection import REAPED_REASON, gc_sweep, transactions_reap

from ..factories import UserFactory
from ..states import noise

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(username="ops", is_staff=True, is_superuser=True))
    return client


def hydrator(*, two_phase: bool, service_two_phase: bool | None = None) -> StateHydrator:
    service = StateVersioningService(use_2pc=two_phase if service_two_phase is None else service_two_phase)
    return StateHydrator(
        use_batching=True,
        inline_frames=False,
        use_2pc=two_phase,
        store=statebag_store(),
        manifest_store=service,
    )


def run_steps(engine: StateHydrator, execution_id: str, steps: int, *, changing: bool = True) -> None:
    payload: dict = {}
    for step in range(steps):
        bag = engine.hydrate(payload)
        if changing or step == 0:
            bag["llm_response"] = {"text": noise(f"{execution_id}/{step}", 20_000)}
        payload = engine.dehydrate(bag, owner_id="acme", workflow_id="wf", execution_id=execution_id)


def prepared(execution_id: str) -> str:
    request = PrepareRequest(
        owner_id="acme", workflow_id="wf", execution_id=execution_id, parents=(), packs=(), reused=()
    )
    return StateVersioningService(use_2pc=True).prepare(request).txn_id


def figures(body: str) -> dict[str, str]:
    """Every ``data-figure`` on the page, by name, with its text."""
    return {
        name: re.sub(r"<[^>]+>", "", text).strip()
        for name, text in re.findall(r'data-figure="([\w-]+)"[^>]*>(.*?)</(?:span|dd|td)>', body, flags=re.S)
    }


def outcome_rows(body: str) -> dict[str, tuple[int, int]]:
    rows = re.findall(
        r'<tr data-outcome="(\w+)">.*?data-figure="hour">(\d+)</td><td data-figure="day">(\d+)</td>',
        body,
        re.S,
    )
    return {name: (int(hour), int(day)) for name, hour, day in rows}


def test_dashboard__real_commits_aborts_reaps_and_gc__each_counted(staff_client, service_store, settings):
    settings.STATEBAG = {**settings.STATEBAG, "USE_2PC": True}
    # Given three two-phase versions, one that uploads nothing, one step that bypassed the 2PC
    run_steps(hydrator(two_phase=True), "two-phase", 3)
    run_steps(hydrator(two_phase=True), "unchanged", 2, changing=False)
    run_steps(hydrator(two_phase=False, service_two_phase=True), "bypass", 1)
    # And two transactions their clients aborted, one the reaper aborted once it expired, one open
    for name in ("gave-up", "lost-race"):
        StateVersioningService(use_2pc=True).abort(prepared(name))
    expired = prepared("crashed")
    CommitTransaction.objects.filter(pk=expired).update(expires_at=timezone.now() - timedelta(seconds=1))
    transactions_reap()
    prepared("in-flight")
    # And a GC run that deletes what nothing references any more
    Pack.objects.update(gc_candidate_since=timezone.now() - timedelta(days=1))
    Manifest.objects.filter(execution__execution_id="two-phase", version=1).update(retained=False)
    run = gc_sweep(grace=timedelta(0))
    # When the operator opens the admin's home page
    response = staff_client.get(reverse("admin:index"))
    body = response.content.decode()
    # Then each outcome is counted, for the last hour and the last day
    assert response.status_code == 200
    assert outcome_rows(body) == {
        "2pc": (4, 4),  # three steps, and the first step of "unchanged"
        "noupload": (1, 1),
        "direct": (1, 1),
        "aborted": (2, 2),
        "reaped": (1, 1),
    }
    shown = figures(body)
    assert shown["bypassed-hour"] == "1" and shown["bypassed-day"] == "1"
    assert shown["reaped-hour"] == "1" and shown["reaped-day"] == "1"
    assert shown["gc-runs"] == "1"
    assert run.deleted_bytes > 0
    assert f'data-bytes="{run.deleted_bytes}"' in body
    live = sum(Pack.objects.filter(state=Pack.State.LIVE).values_list("size", flat=True))
    assert f'data-figure="stored-bytes" data-bytes="{live}"' in body
    assert "1 expired, awaiting the reaper" not in body and "(0 expired" in body
    # And the charts draw a bar for the minute the commits happened
    assert body.count('class="series-2pc"') >= 2  # the hour's chart and the day's
    assert "Client-side figures" in body and 'id="card-telemetry"' in body
    # And the sweeps that ran say when; the others that they did not
    assert re.search(r'data-sweep="reap"><span>Reap expired transactions</span> <time', body)
    assert re.search(r'data-sweep="retention"><span>Retention</span> <span[^>]*>not in the last 7 days', body)


def test_dashboard__use_2pc_off__bypass_not_reported_as_one(staff_client, service_store, settings):
    settings.STATEBAG = {**settings.STATEBAG, "USE_2PC": False}
    run_steps(hydrator(two_phase=False), "one-step", 2)
    body = staff_client.get(reverse("admin:index")).content.decode()
    assert outcome_rows(body)["direct"] == (2, 2)
    assert "not asked for (USE_2PC is off)" in body and "bypassed-hour" not in figures(body)


def test_dashboard_build__old_rows__only_in_the_windows_they_fall_in(service_store):
    # Given versions committed now, two hours ago and two days ago
    run_steps(hydrator(two_phase=True), "e", 3)
    now = timezone.now()
    Manifest.objects.filter(version=2).update(created_at=now - timedelta(hours=2))
    Manifest.objects.filter(version=3).update(created_at=now - timedelta(days=2))
    GCRun.objects.create(kind=GCRun.Kind.GC, deleted_bytes=500, deleted_objects=2)
    GCRun.objects.filter(kind=GCRun.Kind.GC).update(started_at=now - timedelta(hours=30))
    # When the figures are built
    health = dashboard_build(now=now, rollout=False, audit=False).statebag
    # Then the hour holds one, the day two, and the run of 30 hours ago is in neither
    assert health is not None
    assert health.commits_hour.total("2pc") == 1
    assert health.commits_day.total("2pc") == 2
    assert health.commits_day.values["2pc"][-1] == 1 and health.commits_day.values["2pc"][-3] == 1
    assert health.gc_runs_day == 0 and health.gc_freed_bytes_day == 0
    assert dict((kind, at) for kind, _, at in health.last_sweeps)["gc"] is not None  # the week's last


def test_dashboard__rollout_sections__plans_flags_by_state_and_changes(staff_client, rollout_defaults):
    # Given, in prod, flags on for everyone, at 25 %, at 0 %, with variants, and left off
    prod = Environment.objects.get(key="prod")
    seeded = {name: int(n) for name, n in prod_flag_counts(staff_client).items()}
    flags = {
        key: rollout_services.flag_create(key=key, kind="boolean", default_value=False, actor="alice")
        for key in ("on-flag", "partial-flag", "zero-flag", "variant-flag", "off-flag")
    }
    update = rollout_services.flag_state_update
    update(flag=flags["on-flag"], environment=prod, actor="alice", enabled=True, value=True)
    update(
        flag=flags["partial-flag"], environment=prod, actor="alice", enabled=True, value=True, percentage=25
    )
    update(flag=flags["zero-flag"], environment=prod, actor="alice", enabled=True, value=True, percentage=0)
    update(
        flag=flags["variant-flag"],
        environment=prod,
        actor="alice",
        enabled=True,
        variants=[{"value": True, "weight": 50_000}, {"value": False, "weight": 50_000}],
    )
    admin_user = UserFactory(username="boss", is_staff=True, is_superuser=True)
    plan = rollout_services.plan_create(
        name="ramp partial",
        flag=flags["partial-flag"],
        value=True,
        actor="alice",
        steps=[{"environment": prod, "percentage": 50}, {"environment": prod, "percentage": 100}],
    )
    rollout_services.plan_start(plan=plan, user=admin_user)
    # When the home page is shown
    body = staff_client.get(reverse("admin:index")).content.decode()
    # Then prod's new flags are counted by state: one on, the plan's flag and the variants
    # rolling out, and the flag on for 0 % with the one left off
    shown = prod_flag_counts(staff_client, body)
    added = {name: shown[name] - seeded[name] for name in shown}
    assert added == {"on": 1, "rolling": 2, "off": 2}
    # And the running plan with its progress, and the latest changes, are listed
    assert RolloutPlan.objects.get(pk=plan.pk).status == RolloutPlan.Status.RUNNING
    assert "ramp partial" in body and "step 1 of 2" in body
    assert "plan.start" in body or "plan.create" in body
    assert re.search(r'id="kpi-plans"><span class="analemma-kpi-value">1<', body)


def prod_flag_counts(client, body: str | None = None) -> dict[str, int]:
    body = body or client.get(reverse("admin:index")).content.decode()
    row = re.search(r'<tr data-environment="prod">(.*?)</tr>', body, re.S)[1]
    return {name: int(n) for name, n in re.findall(r'data-figure="(\w+)">(\d+)<', row)}


def test_dashboard__viewer_without_statebag_rights__no_statebag_figures(client):
    client.force_login(
        UserFactory(
            username="flags", is_staff=True, permissions=["rollout.view_flag", "rollout.view_rolloutplan"]
        )
    )
    body = client.get(reverse("admin:index")).content.decode()
    assert 'id="card-plans"' in body
    assert 'id="card-commits"' not in body and 'id="card-changes"' not in body


def grow(executions: int, offset: int) -> None:
    """Rows of every kind the dashboard reads, ``executions`` of them."""
    engine = hydrator(two_phase=True)
    for n in range(offset, offset + executions):
        run_steps(engine, f"exec-{n}", 1)
    GCRun.objects.bulk_create(GCRun(kind=GCRun.Kind.GC, deleted_bytes=n) for n in range(executions))
    for n in range(offset, offset + executions):
        txn = prepared(f"abandoned-{n}")
        if n % 2:
            StateVersioningService(use_2pc=True).abort(txn)


def dashboard_queries(client) -> int:
    cache.clear()  # the stored-bytes total is cached for a minute: count its query every time
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    return len(captured)


def test_dashboard__5_then_200_executions__same_number_of_queries(
    staff_client, service_store, rollout_defaults
):
    grow(5, 0)
    few = dashboard_queries(staff_client)
    grow(195, 5)
    many = dashboard_queries(staff_client)
    assert many == few, (few, many)
    assert many <= 25, many


def test_dashboard__stored_bytes__summed_once_a_minute(staff_client, service_store):
    run_steps(hydrator(two_phase=True), "e", 1)
    staff_client.get(reverse("admin:index"))
    with CaptureQueriesContext(connection) as captured:
        staff_client.get(reverse("admin:index"))
    totals = [q["sql"] for q in captured.captured_queries if '"statebag_pack"."state" =' in q["sql"]]
    assert not [sql for sql in totals if "SUM(" in sql]


def test_admin_pages__product_look__stylesheet_title_and_no_view_site(staff_client):
    body = staff_client.get(reverse("admin:index")).content.decode()
    assert "/static/analemma/admin.css" in body
    assert "<title>Dashboard | Analemma admin</title>" in body
    assert "View site" not in body


def test_dashboard_build__client_aborts_after_expiry__aborted_not_reaped(service_store):
    # Given a transaction that expired, which its client then aborted before the reaper came
    late = prepared("late-abort")
    CommitTransaction.objects.filter(pk=late).update(expires_at=timezone.now() - timedelta(minutes=5))
    StateVersioningService(use_2pc=True).abort(late)
    # And one the reaper aborted
    CommitTransaction.objects.filter(pk=prepared("crashed")).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    transactions_reap()
    assert CommitTransaction.objects.get(pk=late).reason != REAPED_REASON
    # When the figures are built
    health = dashboard_build(rollout=False, audit=False).statebag
    # Then the client's abort is counted as aborted, the reaper's alone as reaped
    assert health is not None
    assert (health.commits_hour.total("aborted"), health.commits_hour.total("reaped")) == (1, 1)
    assert (health.commits_day.total("aborted"), health.commits_day.total("reaped")) == (1, 1)


def test_dashboard_build__bytes_freed__gc_and_reaper_deletions_summed(service_store):
    now = timezone.now()
    GCRun.objects.create(kind=GCRun.Kind.GC, deleted_bytes=500, deleted_objects=2)
    GCRun.objects.create(kind=GCRun.Kind.REAP, deleted_bytes=70, deleted_objects=1)
    GCRun.objects.create(kind=GCRun.Kind.RETENTION, deleted_bytes=0, deleted_objects=0)
    health = dashboard_build(now=now, rollout=False, audit=False).statebag
    assert health is not None
    assert health.gc_freed_bytes_day == 570 and health.gc_deleted_objects_day == 3
    assert health.gc_runs_day == 1  # the GC sweeps; the reaper's runs are counted as reaps


def test_dashboard__day_series__read_once_a_minute(staff_client, service_store):
    # Given the home page shown once
    run_steps(hydrator(two_phase=True), "e", 1)
    staff_client.get(reverse("admin:index"))
    # When it is shown again within the minute
    Manifest.objects.update(created_at=timezone.now() - timedelta(hours=3))
    with CaptureQueriesContext(connection) as captured:
        body = staff_client.get(reverse("admin:index")).content.decode()
    # Then the per-hour figures come from the cache: no query reads packs, GC runs or versions by
    # the hour, and the day still shows the commit as it was a moment ago
    hourly = [q["sql"] for q in captured.captured_queries if "'hour'" in q["sql"] or "HOUR" in q["sql"]]
    assert hourly == []
    assert outcome_rows(body)["2pc"] == (0, 1)
    # And once the minute has passed, they are read again
    cache.clear()
    body = staff_client.get(reverse("admin:index")).content.decode()
    assert outcome_rows(body)["2pc"] == (0, 1)


def test_dashboard__statebag_links__only_to_lists_the_viewer_may_see(client):
    # Given a viewer of executions who may not see transactions, GC runs or packs
    client.force_login(
        UserFactory(username="executions-only", is_staff=True, permissions=["statebag.view_execution"])
    )
    body = client.get(reverse("admin:index")).content.decode()
    # Then the state bag's figures are there, with a link to executions only
    assert 'id="card-commits"' in body and 'id="card-gc"' in body
    assert reverse("admin:statebag_execution_changelist") in body
    for name in ("committransaction", "gcrun", "pack"):
        assert reverse(f"admin:statebag_{name}_changelist") not in body, name
    # And a viewer granted those lists sees each link
    client.force_login(
        UserFactory(
            username="statebag-viewer",
            is_staff=True,
            permissions=[
                f"statebag.view_{name}" for name in ("execution", "committransaction", "gcrun", "pack")
            ],
        )
    )
    body = client.get(reverse("admin:index")).content.decode()
    for name in ("committransaction", "gcrun", "pack"):
        assert reverse(f"admin:statebag_{name}_changelist") in body, name
