"""What `make run` starts (``manage.py run_local``: web, worker, beat on a broker in a folder)
does the background work by itself: a rollout plan advances to its end and an expired prepared
transaction is reaped, with no process of the test's doing anything meanwhile. One Ctrl-C stops
all three; one of them dying stops the others and fails the command. The admin's password
survives a restart, and the demo is made once, or not at all when switched off.

Each stack runs on its own SQLite file and folders under a temp dir. Its periodic tasks are set
to run every second, by editing django-celery-beat's table before the start as an operator
could in the admin, so these tests take seconds rather than minutes."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ..run_stack import (
    Stack,
    alive,
    copy_database,
    manage,
    query,
    running_stack,
    shell,
    wait_for,
)


@pytest.fixture(scope="module")
def stack(migrated: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(migrated, tmp_path_factory.mktemp("stack"), ANALEMMA_DEMO="false") as running:
        yield running


START_TWO_STEP_PLAN = """
from django.contrib.auth import get_user_model
from rollout.models import Environment, Flag
from rollout.services.plans import plan_create, plan_start
operator = get_user_model().objects.create_superuser("operator", "", "not-used-here")
dev = Environment.objects.get(key="dev")
plan = plan_create(
    name="two steps",
    flag=Flag.objects.get(key="use_batching"),
    value=True,
    steps=[{"environment": dev, "percentage": 50}, {"environment": dev, "percentage": 100}],
    actor="test",
)
plan = plan_start(plan=plan, user=operator)
print(plan.pk, plan.status)  # the start applies step 0 only; the next steps are the stack's
"""


def test_run_local__two_step_plan_without_soak__finished_by_worker_and_beat(stack):
    # Given the stack running, and a two-step plan with no soak started from a shell that exits
    plan_id, status = shell(stack.env, START_TWO_STEP_PLAN).split()
    assert status == "running"
    # When nothing but the stack runs
    finished = wait_for(
        lambda: (
            query(stack.folder, "SELECT status FROM rollout_rolloutplan WHERE id = ?", plan_id)
            == [("completed",)]
        ),
        60,
        "the plan to complete",
        stack,
    )
    # Then beat sent the advance, the worker applied the second step, and the plan completed
    assert finished
    state = query(
        stack.folder,
        "SELECT s.enabled, s.percentage FROM rollout_flagstate s JOIN rollout_flag f ON f.id = s.flag_id "
        "JOIN rollout_environment e ON e.id = s.environment_id WHERE f.key = 'use_batching' AND e.key = 'dev'",
    )
    assert [(bool(enabled), float(percentage)) for enabled, percentage in state] == [(True, 100.0)]
    step_1 = "SELECT created_by FROM rollout_revision WHERE reason = 'plan two steps step 1'"
    assert query(stack.folder, step_1) == [("rollout plan for operator",)]
    assert any(re.match(r"worker\s+\| .*rollout\.advance_plans\[.*succeeded", line) for line in stack.lines)
    assert any(
        re.match(r"beat\s+\| .*Sending due task .*rollout\.advance_plans", line) for line in stack.lines
    )


PREPARE_EXPIRING = """
from datetime import timedelta
from analemma_sdk.statebag.manifests import PrepareRequest
from statebag.services import StateVersioningService
service = StateVersioningService(use_2pc=True, transaction_ttl=timedelta(seconds=2))
prepared = service.prepare(PrepareRequest(
    owner_id="acme", workflow_id="support", execution_id="abandoned", parents=(), packs=(), reused=(),
))
print(prepared.txn_id)
"""


def test_run_local__prepared_transaction_expires__reaped_by_worker_and_beat(stack):
    # Given a prepared transaction whose client never commits, expiring in two seconds
    txn_id = shell(stack.env, PREPARE_EXPIRING).strip().replace("-", "")

    def transaction_row() -> tuple[Any, ...]:
        sql = "SELECT state, reason, expires_at, finished_at FROM statebag_committransaction WHERE id = ?"
        return query(stack.folder, sql, txn_id)[0]

    # When nothing but the stack runs, it is aborted as expired, once it expired
    wait_for(lambda: transaction_row()[0] == "aborted", 60, "the transaction to be reaped", stack)
    state, reason, expires_at, finished_at = transaction_row()
    assert (state, reason) == ("aborted", "expired before commit")
    assert datetime.fromisoformat(finished_at) >= datetime.fromisoformat(expires_at)
    assert query(stack.folder, "SELECT count(*) FROM statebag_gcrun WHERE kind = 'reap'")[0][0] > 0
    # And the demo, switched off, was not made
    assert query(stack.folder, "SELECT count(*) FROM rollout_environment WHERE key = 'demo'") == [(0,)]


def test_run_local__ctrl_c__stops_all_three_and_exits_cleanly(migrated, tmp_path):
    with running_stack(migrated, tmp_path) as stack:
        pids = stack.pids()
        assert set(pids) == {"web", "worker", "beat"} and all(alive(pid) for pid in pids.values())
        # The demo is on by default: made on the first start
        assert query(tmp_path, "SELECT count(*) FROM rollout_environment WHERE key = 'demo'") == [(1,)]
        # When Ctrl-C is pressed once
        stack.ctrl_c()
        code = stack.process.wait(timeout=60)
        stack.reader.join(timeout=10)  # every line it printed is read before it is looked for
        # Then every process stopped, the worker by its warm shutdown, and the command succeeded
        assert code == 0, "\n".join(stack.lines[-40:])
        assert not any(alive(pid) for pid in pids.values())
        assert any(re.match(r"worker\s+\| .*Warm shutdown", line) for line in stack.lines)
        for name in pids:
            assert any(re.match(rf"{name}\s+\| stopped \(exit code 0\)", line) for line in stack.lines), name


def test_run_local__worker_dies__others_stopped_and_exit_code_says_so(migrated, tmp_path):
    with running_stack(migrated, tmp_path, ANALEMMA_DEMO="false") as stack:
        pids = stack.pids()
        # When the worker is killed outright
        os.kill(pids["worker"], signal.SIGKILL)
        code = stack.process.wait(timeout=60)
        stack.reader.join(timeout=10)  # every line it printed is read before it is looked for
        # Then the web server and beat are stopped too, and the exit status names the signal
        assert code == 128 + signal.SIGKILL, "\n".join(stack.lines[-40:])
        assert not alive(pids["web"]) and not alive(pids["beat"])
        assert any(
            re.match(r"worker\s+\| exited with code -9; stopping the others", line) for line in stack.lines
        )


# The admin account and the demo (no stack needed: the commands run against a temp database) ---
LOGIN = re.compile(r"user: admin\s+password: (\S+)")
SECOND_RUNS = """
from io import StringIO
from django.contrib.auth import authenticate
from django.core.management import call_command

def can_log_in(password):
    return authenticate(username="admin", password=password) is not None

def bootstrap(*args):
    out = StringIO()
    call_command("bootstrap_local", *args, stdout=out)
    return out.getvalue()

again = bootstrap()
first_still_works = can_log_in({first!r})
reset = bootstrap("--reset-password")
print(repr((again, first_still_works, reset)))
"""


def test_bootstrap_local__second_run__keeps_the_password_and_says_how_to_reset(migrated, tmp_path):
    env = copy_database(migrated, tmp_path)
    # Given the first run, which printed a login
    first = LOGIN.search(manage(env, "bootstrap_local"))
    assert first is not None
    # When it runs again (and then again with --reset-password)
    again, first_still_works, reset = ast.literal_eval(shell(env, SECOND_RUNS.format(first=first[1])))
    # Then the second run printed no password, said how to reset it, and the first one still worked
    assert "password:" not in again and "--reset-password" in again and "changepassword admin" in again
    assert first_still_works
    # And --reset-password made a new one and printed it; from then on only that one works
    new = LOGIN.search(reset)
    assert new is not None and new[1] != first[1]
    assert shell(env, CAN_LOG_IN.format(old=first[1], new=new[1])).strip() == "False True"


CAN_LOG_IN = """
from django.contrib.auth import authenticate
print(*(authenticate(username="admin", password=p) is not None for p in ({old!r}, {new!r})))
"""


DEMO_TWICE = """
import json
from io import StringIO
from django.core.management import call_command
from audit.models import AuditEntry
from rollout.models import Flag, Revision, RolloutPlan
from statebag.models import Execution, Manifest, Pack
from statebag.services import manifest_state
from statebag.services.stores import statebag_store
from analemma_sdk.statebag import StateHydrator

def counts():
    reader = StateHydrator(use_batching=True, use_zstd=True, store=statebag_store())
    demo_flags = Flag.objects.filter(key__startswith="demo-")
    return {
        "states": sorted(
            (s.flag.key, s.enabled, float(s.percentage), len(s.variants))
            for f in demo_flags for s in f.states.filter(environment__key="demo")
        ),
        "plans": list(RolloutPlan.objects.values_list("status", flat=True)),
        "revisions": Revision.objects.count(),
        "audit": AuditEntry.objects.count(),
        "manifests": Manifest.objects.count(),
        "packs": Pack.objects.count(),
        "heads": {
            e.execution_id: manifest_state(e.head, reader).to_dict()["step"]
            for e in Execution.objects.filter(owner_id="demo").select_related("head")
        },
    }

made = counts()
out = StringIO()
call_command("seed_demo", stdout=out)
print(json.dumps([made, counts(), out.getvalue()]))
"""


def test_seed_demo__run_twice__made_once_through_the_services(migrated, tmp_path):
    env = copy_database(migrated, tmp_path)
    manage(env, "bootstrap_local")
    # Given the demo made once
    assert "Demo made" in manage(env, "seed_demo")
    # When it is seeded again
    made, again, seeded_again = json.loads(shell(env, DEMO_TWICE))
    # Then its flags are in different states: on, killed, a percentage, variants, and a plan's
    assert made["states"] == [
        ["demo-agent-memory", True, 10.0, 0],  # the plan's first step
        ["demo-answer-model", True, 100.0, 3],
        ["demo-fast-summaries", True, 25.0, 0],
        ["demo-legacy-search", False, 100.0, 0],
        ["demo-new-checkout", True, 100.0, 0],
    ]
    assert made["plans"] == ["running"]
    # And its executions have versions whose state hydrates from the store
    assert made["heads"] == {"demo-ticket-1": 3, "demo-ticket-2": 4, "demo-ticket-3": 5, "demo-ticket-4": 6}
    assert made["manifests"] == 18 and made["packs"] > 0
    # And seeding again added nothing
    assert "already there" in seeded_again
    assert again == made
