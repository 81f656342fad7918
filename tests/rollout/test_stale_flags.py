"""Stale and dead flags: one value served to everyone (off, on for everyone, 0 %, one variant
at 100 %) unchanged for ROLLOUT_STALE_DAYS, or not evaluated that long in an environment; marked
in the flags list with the reason, and listed as cleanup candidates with a link to each flag."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from rollout.admin_display import settled_text, staleness
from rollout.models import Environment, Flag, FlagState
from telemetry.models import FlagActivity

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CLEANUP = "admin:rollout_flag_stale"


def state(**fields: Any) -> FlagState:
    values: dict[str, Any] = {
        "updated_at": NOW - 40 * DAY,
        "enabled": True,
        "value": None,
        "percentage": Decimal(100),
        "variants": [],
        "targets": [],
        "rules": [],
    }
    values.update(fields)
    return FlagState(**values)


def flag(**fields: Any) -> Flag:
    return Flag(key="f", kind=fields.get("kind", "boolean"), default_value=False, created_at=NOW - 400 * DAY)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"enabled": False}, "off"),
        ({"enabled": False, "targets": [{"units": ["x"], "value": True}]}, "off"),  # off ignores targets
        ({}, "on for everyone (true)"),
        ({"percentage": Decimal(0)}, "0 %: everyone gets the default"),
        (
            {"variants": [{"value": True, "weight": 100000}, {"value": False, "weight": 0}]},
            "one variant at 100 % (true)",
        ),
        ({"percentage": Decimal(5)}, None),
        ({"variants": [{"value": True, "weight": 50000}, {"value": False, "weight": 50000}]}, None),
        ({"targets": [{"units": ["x"], "value": False}]}, None),  # someone still gets another value
        ({"rules": [{"attribute": "region", "op": "in", "values": ["eu"], "value": False}]}, None),
    ],
)
def test_settled__one_value_for_everyone(fields: dict[str, Any], expected: str | None) -> None:
    assert settled_text(state(**fields), flag()) == expected


def judge(
    subject: FlagState, *, last: datetime | None = None, since: datetime | None = None, telemetry: bool = True
):
    return [
        (s.kind, s.since)
        for s in staleness(
            subject, flag(), now=NOW, days=30, last_evaluated=last, reporting_since=since, telemetry=telemetry
        )
    ]


def test_staleness__settled_for_n_days__not_before() -> None:
    assert judge(state(updated_at=NOW - 30 * DAY), last=NOW) == [("settled", NOW - 30 * DAY)]
    assert judge(state(updated_at=NOW - 29 * DAY), last=NOW) == []
    assert judge(state(percentage=Decimal(50), updated_at=NOW - 300 * DAY), last=NOW) == []


def test_staleness__not_evaluated_for_n_days_or_never_where_sdks_report() -> None:
    ramping = state(percentage=Decimal(50))
    assert judge(ramping, last=NOW - 31 * DAY) == [("unevaluated", NOW - 31 * DAY)]
    assert judge(ramping, last=NOW - 29 * DAY) == []
    assert judge(ramping, since=NOW - 60 * DAY) == [("never", NOW - 60 * DAY)]  # dead: SDKs report, never it
    assert judge(ramping, since=NOW - 10 * DAY) == []  # reporting for too short a time to tell
    assert judge(ramping) == []  # nothing reports there: unknown, not dead
    assert judge(ramping, last=NOW - 90 * DAY, telemetry=False) == []  # no telemetry installed
    both = judge(state(enabled=False), last=NOW - 31 * DAY)
    assert [kind for kind, _ in both] == ["settled", "unevaluated"]


def test_staleness__never_evaluated_counts_from_the_flags_creation() -> None:
    young = Flag(key="f", kind="boolean", default_value=False, created_at=NOW - 5 * DAY)
    found = staleness(
        state(percentage=Decimal(50)),
        young,
        now=NOW,
        days=30,
        last_evaluated=None,
        reporting_since=NOW - 90 * DAY,
        telemetry=True,
    )
    assert found == []


def _age(flag_key: str, environment: str, days: int) -> None:
    FlagState.objects.filter(flag__key=flag_key, environment__key=environment).update(
        updated_at=timezone.now() - timedelta(days=days)
    )


def test_flags_list_and_cleanup_view__stale_marked_with_reasons_and_listed(
    admin_client: Any, settings: Any
) -> None:
    settings.ROLLOUT_STALE_DAYS = 30
    now = timezone.now()
    # use_2pc: off in every environment for 40 days; use_zstd: ramping in prod, not evaluated for 45 days;
    # use_batching: ramping in prod, never evaluated while prod's SDKs have reported for 60 days.
    for environment in ("dev", "staging", "prod"):
        _age("use_2pc", environment, 40)
    FlagState.objects.filter(flag__key__in=["use_zstd", "use_batching"], environment__key="prod").update(
        enabled=True, percentage=Decimal(20), updated_at=now - timedelta(days=100)
    )
    Flag.objects.update(created_at=now - timedelta(days=200))
    FlagActivity.objects.create(
        environment="prod",
        flag="use_zstd",
        first_evaluated_at=now - 90 * DAY,
        last_evaluated_at=now - 45 * DAY,
    )
    FlagActivity.objects.create(
        environment="prod", flag="", first_evaluated_at=now - 60 * DAY, last_evaluated_at=now
    )
    for evaluated in ("use_2pc", "zstd_level"):  # evaluated a minute ago in prod
        FlagActivity.objects.create(
            environment="prod", flag=evaluated, first_evaluated_at=now - 60 * DAY, last_evaluated_at=now
        )
    page = html.unescape(admin_client.get(reverse("admin:rollout_flag_changelist")).content.decode())
    rows = {
        key: next(row for row in page.split("<tr")[1:] if f">{key}</a>" in row)
        for key in ("use_2pc", "use_zstd", "use_batching", "zstd_level")
    }
    assert (
        rows["use_2pc"].count('class="stale-mark"') == 3 and "off, unchanged for 30+ days" in rows["use_2pc"]
    )
    assert (
        rows["use_zstd"].count('class="stale-mark"') == 1 and "not evaluated in 30+ days" in rows["use_zstd"]
    )
    assert "never evaluated here in 30+ days of telemetry" in rows["use_batching"]
    assert "stale-mark" not in rows["zstd_level"]  # off, but changed since (made at migrate)
    assert reverse(CLEANUP) in page

    listing = html.unescape(admin_client.get(reverse(CLEANUP)).content.decode())
    table = listing.split('id="stale-flags"')[1].split("</table>")[0]
    entries = [row.split(">", 1)[0] for row in table.split("<tr")[2:]]
    assert len(entries) == 5 and "5 candidates." in listing
    # Oldest first: never evaluated since 60 days, then not evaluated for 45, then off for 40.
    assert 'data-flag="use_batching" data-environment="prod"' in entries[0]
    assert 'data-flag="use_zstd" data-environment="prod"' in entries[1]
    assert all('data-flag="use_2pc"' in entry for entry in entries[2:])
    zstd = Flag.objects.get(key="use_zstd")
    assert f'href="{reverse("admin:rollout_flag_change", args=[zstd.pk])}#env-prod">use_zstd</a>' in table


def test_cleanup_view__without_telemetry__settled_flags_only_and_says_so(
    admin_client: Any, settings: Any
) -> None:
    settings.ROLLOUT_FLAG_ACTIVITY = ""
    _age("use_2pc", "prod", 40)
    FlagActivity.objects.create(
        environment="prod",
        flag="use_zstd",
        first_evaluated_at=timezone.now() - 90 * DAY,
        last_evaluated_at=timezone.now() - 45 * DAY,
    )
    listing = html.unescape(admin_client.get(reverse(CLEANUP)).content.decode())
    assert "Telemetry is not installed (settings.ROLLOUT_FLAG_ACTIVITY is empty)" in listing
    assert listing.count('<tr class="stale-') == 1 and 'data-flag="use_2pc"' in listing


def test_cleanup_view__staff_without_the_flag_view_right__403(client: Any) -> None:
    from ..factories import UserFactory

    client.force_login(UserFactory(is_staff=True))
    assert client.get(reverse(CLEANUP)).status_code == 403
    assert Environment.objects.count() == 3
