"""A latency guard's row on the plan page says what its numbers are: the share of each side's
hydrations slower than the control's p95, not a latency in ms. The cohort table and chart,
which do show each cohort's p95 in ms, keep their label."""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from rollout import services
from rollout.models import Environment, Flag, RolloutPlan
from telemetry.models import CohortRollup
from telemetry.services import series_of
from telemetry.wire import canonical

pytestmark = pytest.mark.django_db


def cohort(minute, *, zstd, executions, hydrate):
    text = canonical({"use_zstd": zstd, "use_2pc": True})
    CohortRollup.objects.create(
        environment="prod",
        minute=minute.replace(second=0, microsecond=0),
        cohort=text,
        series=series_of(text),
        reports=1,
        counters={"executions": executions, "hydrations": executions},
        latency={"hydrate": {str(bound): count for bound, count in hydrate.items()}},
    )


def test_plan_page__p95_guard_rows__labelled_as_a_share(admin_client):
    now = timezone.now()
    prod = Environment.objects.get(key="prod")
    plan = services.plan_create(
        name="zstd",
        flag=Flag.objects.get(key="use_zstd"),
        value=True,
        steps=[
            {
                "environment": prod,
                "percentage": 10,
                "guards": [{"metric": "p95_hydrate_ms", "min_sample": 100}],
            }
        ],
        actor="ops",
    )
    plan.steps.update(applied_at=now - timedelta(minutes=10), revision_number=2)
    RolloutPlan.objects.filter(pk=plan.pk).update(status=RolloutPlan.Status.RUNNING)
    cohort(now - timedelta(minutes=2), zstd=True, executions=400, hydrate={4: 390, 64: 10})
    cohort(now - timedelta(minutes=2), zstd=False, executions=4000, hydrate={4: 3900, 8: 100})
    response = admin_client.get(reverse("admin:rollout_rolloutplan_change", args=[plan.pk]), {"window": "1h"})
    page = html.unescape(response.content.decode())
    guards = (
        page.split('id="plan-guard-states"')[1]
        .split("</table>\n  </td>")[0]
        .split('id="plan-metric-chart"')[0]
    )
    row = guards.split('data-metric="p95_hydrate_ms"')[1].split("</tr>")[0]
    assert "share of hydrations slower than the control's p95" in row
    assert "latency (ms)" not in row
    # Each cohort's own p95 (ms) is still shown as such under the chart.
    assert "p95 hydrate latency (ms)" in page.split('id="plan-metric-chart"')[1]
