"""End to end: a fleet of Lambdas (another process, real HTTP against the live service) runs
``use_zstd`` at 10 % for thousands of executions and reports its cohorts' economics; the
per-minute aggregation and the plan's periodic advance then run as the beat would run them,
on an injected clock. With a fault in the treatment cohort only, the plan's built-in guard
aborts the plan by itself, the flag returns to its baseline, the audit entry carries the
numbers and the webhook hears of it. Without the fault, the plan advances."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEntry
from rollout import services
from rollout.models import Environment, Flag, FlagState, RolloutPlan
from rollout.services import plans
from telemetry.guards import plan_comparison
from telemetry.services import telemetry_aggregate

from ..factories import UserFactory, sdk_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rollout_defaults")]

FLEET = Path(__file__).with_name("fleet.py")
SDK = Path(__file__).resolve().parents[2] / "sdk"
EXECUTIONS = 3000  # each one two invocations: 6,000 executions, about 600 in the 10 % cohort
SOAK = 600
GUARDS = [
    # errors per execution: the treatment may be at most 1 percentage point worse
    {
        "metric": "error_rate",
        "worse": "higher",
        "tolerance": 0.01,
        "tolerance_kind": "absolute",
        "min_sample": 200,
    },
    {"metric": "requests_per_execution", "tolerance": 0.25, "min_sample": 200},
]


class Webhook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # the http.server protocol's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Webhook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook(settings: Any) -> Iterator[list[dict[str, Any]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Webhook.received = []
    settings.ROLLOUT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hooks/rollout?token=secret"
    settings.ROLLOUT_WEBHOOK_TIMEOUT_SECONDS = 2.0
    try:
        yield Webhook.received
    finally:
        server.shutdown()
        server.server_close()


def zstd_in_prod() -> FlagState:
    return FlagState.objects.get(flag__key="use_zstd", environment__key="prod")


def run_fleet(url: str, key: str, fault: float) -> dict[str, int]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(SDK),
        "ANALEMMA_TELEMETRY": "true",
        # Distinct units (sketches) are not what a guard reads; the cohorts' counters are.
        "ANALEMMA_TELEMETRY_UNITS": "false",
    }
    done = subprocess.run(
        [sys.executable, str(FLEET), url, key, "--executions", str(EXECUTIONS), "--fault", str(fault)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("fault", [0.3, 0.0], ids=["treatment_fails", "healthy"])
def test_fleet__guarded_step__aborts_on_a_faulty_cohort_advances_on_a_healthy_one(
    fault: float, live_server: Any, settings: Any, webhook: list[dict[str, Any]]
) -> None:
    settings.ROLLOUT_GUARDS = ["telemetry.guards.step_guard"]
    prod = Environment.objects.get(key="prod")
    _, key = sdk_key(prod, actor="ops")
    before = zstd_in_prod()
    assert not before.enabled  # the baseline: off in prod
    operator = UserFactory(username="release", is_staff=True, permissions=["rollout.change_flagstate"])
    plan = services.plan_create(
        name="zstd in prod",
        flag=Flag.objects.get(key="use_zstd"),
        value=True,
        steps=[
            {"environment": prod, "percentage": 10, "min_soak_seconds": SOAK, "guards": GUARDS},
            {"environment": prod, "percentage": 50},
        ],
        actor="release",
    )
    plan = services.plan_start(plan=plan, user=operator)
    applied_at = plan.steps.get(position=0).applied_at
    assert zstd_in_prod().percentage == 10

    # Before any telemetry the guard waits: the soak alone would not let the plan advance.
    assert plans.plans_advance(now=applied_at + timedelta(seconds=SOAK + 1)) == 0
    assert RolloutPlan.objects.get(pk=plan.pk).status == "running"

    seen = run_fleet(live_server.url, key, fault)
    assert 0.07 * EXECUTIONS < seen["treatment"] < 0.13 * EXECUTIONS and seen["flushed"] > 0
    assert (seen["failed"] > 0) == (fault > 0)
    telemetry_aggregate()  # the beat's per-minute roll-up, run now
    comparison = plan_comparison(RolloutPlan.objects.get(pk=plan.pk))
    assert comparison is not None
    errors = comparison.metrics[0]
    assert errors.treatment.n >= 2 * seen["treatment"] - seen["failed"]  # two invocations each

    applied = plans.plans_advance(now=applied_at + timedelta(seconds=SOAK + 61))
    plan.refresh_from_db()
    if fault:
        assert applied == 0 and plan.status == "aborted" and "error_rate worse in treatment" in plan.reason
        after = zstd_in_prod()
        assert (after.enabled, after.value, after.percentage) == (
            before.enabled,
            before.value,
            before.percentage,
        )
        entry = AuditEntry.objects.get(action="plan.abort", detail__plan=plan.pk)
        verdict = entry.detail["guard"]
        assert verdict["state"] == "fail"
        numbers = verdict["metrics"][0]
        assert numbers["metric"] == "error_rate" and numbers["state"] == "fail"
        assert numbers["treatment"]["n"] == errors.treatment.n and numbers["control"]["estimate"] == 0
        assert numbers["interval"]["low"] > numbers["threshold"] == 0.01
        assert numbers["interval"]["statistic"] >= numbers["interval"]["boundary"]
        assert numbers["treatment"]["estimate"] == pytest.approx(seen["failed"] / errors.treatment.n)
        (notice,) = webhook
        assert notice["event"] == "plan.guard_abort" and notice["plan"]["id"] == plan.pk
        assert notice["verdict"]["metrics"][0]["interval"] == numbers["interval"]
    else:
        assert applied == 1 and plan.status == "running"
        assert zstd_in_prod().percentage == 50
        assert [m.state for m in comparison.metrics] == ["pass", "pass"]
        assert errors.treatment.estimate == 0 and errors.interval is not None and errors.interval.high < 0.01
        assert not AuditEntry.objects.filter(action="plan.abort").exists() and webhook == []
