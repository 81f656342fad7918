"""How the rollout admin words and draws a flag's state: JSON spellings only (``true``, never
``True``), values typed by the flag's kind, variant splits in percent, and small inline SVG
bars. Pure functions of the rows they are given: no queries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from analemma_sdk.bucketing import TOTAL_WEIGHT

from .models import Flag, FlagState, RolloutPlan, RolloutStep

# Colours of a split bar, in order: the rollout's value first, then each further variant.
SPLIT_CLASSES = ("split-a", "split-b", "split-c", "split-d", "split-e", "split-f")


def json_text(value: Any) -> str:
    """A value as JSON text: what SDKs are served, never a Python spelling."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def value_text(kind: str, value: Any) -> str:
    """A served value as an operator reads it: a string flag's value without quotes, anything
    else as JSON. ``null`` for a missing value."""
    if kind == Flag.Kind.STRING and isinstance(value, str):
        return value
    return json_text(value)


def percent_text(number: Decimal | float | int) -> str:
    """``5``, ``12.5``, ``33.333``: no trailing zeros, no ``100.00``."""
    text = f"{Decimal(str(number)):.3f}".rstrip("0").rstrip(".")
    return text or "0"


def weight_percent(weight: Any) -> str:
    """A variant's weight (of TOTAL_WEIGHT) in percent."""
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        return "?"
    return percent_text(Decimal(str(weight)) * 100 / TOTAL_WEIGHT)


def rollout_value(flag: Flag, value: Any) -> Any:
    """What units in the rollout get: the value, or when it is empty what an SDK serves
    instead (true for a boolean flag, the default otherwise)."""
    if value is not None:
        return value
    return True if flag.kind == Flag.Kind.BOOLEAN else flag.default_value


@dataclass(frozen=True)
class StateSummary:
    """One flag's state in one environment, at a glance."""

    mode: str  # off | on | ramping | variants
    label: str
    detail: str

    @property
    def css(self) -> str:
        return f"state-{self.mode}"


def state_summary(state: FlagState, flag: Flag) -> StateSummary:
    kind = flag.kind
    extras = []
    if state.targets:
        extras.append(f"{len(state.targets)} target{'s' if len(state.targets) != 1 else ''}")
    if state.rules:
        extras.append(f"{len(state.rules)} rule{'s' if len(state.rules) != 1 else ''}")
    tail = f" (+{', '.join(extras)})" if extras and state.enabled else ""
    if not state.enabled:
        return StateSummary("off", "off", f"everyone gets the default {value_text(kind, flag.default_value)}")
    if state.variants:
        parts = [
            f"{value_text(kind, variant.get('value'))} {weight_percent(variant.get('weight'))} %"
            for variant in state.variants
            if isinstance(variant, dict)
        ]
        return StateSummary("variants", "A/B " + " · ".join(parts), "variant split" + tail)
    served = rollout_value(flag, state.value)
    shown = "" if kind == Flag.Kind.BOOLEAN and served is True else f" → {value_text(kind, served)}"
    if state.percentage >= 100:
        return StateSummary("on", f"on{shown}", "everyone in the rollout" + tail)
    return StateSummary("ramping", f"{percent_text(state.percentage)} %{shown}", "percentage rollout" + tail)


def split_parts(state: FlagState, flag: Flag) -> list[tuple[Decimal, str]]:
    """The expected split of units: (percent, what they get), adding up to 100."""
    kind = flag.kind
    default = value_text(kind, flag.default_value)
    if not state.enabled:
        return [(Decimal(100), f"{default} (default: the flag is off)")]
    if state.variants:
        parts = []
        for variant in state.variants:
            weight = variant.get("weight") if isinstance(variant, dict) else None
            if isinstance(weight, int) and not isinstance(weight, bool):
                parts.append((Decimal(weight) * 100 / TOTAL_WEIGHT, value_text(kind, variant.get("value"))))
        return parts
    served = value_text(kind, rollout_value(flag, state.value))
    percentage = Decimal(state.percentage)
    parts = [(percentage, served)]
    if percentage < 100:
        parts.append((Decimal(100) - percentage, f"{default} (default)"))
    return parts


def split_svg(parts: list[tuple[Decimal, str]], *, element_id: str = "") -> SafeString:
    """A 100-unit wide bar of the split, one rectangle per part, titled with its share."""
    x = Decimal(0)
    rects = []
    for index, (share, label) in enumerate(parts):
        rects.append(
            (
                SPLIT_CLASSES[index % len(SPLIT_CLASSES)],
                f"{x:.3f}",
                f"{share:.3f}",
                f"{percent_text(share)} % → {label}",
            )
        )
        x += share
    body = format_html_join(
        "", '<rect class="{}" x="{}" y="0" width="{}" height="10"><title>{}</title></rect>', rects
    )
    return format_html(
        '<svg class="split-bar" {} viewBox="0 0 100 10" preserveAspectRatio="none" role="img" '
        'aria-label="expected split">{}</svg>',
        format_html('id="{}"', element_id) if element_id else "",
        body,
    )


def split_legend(parts: list[tuple[Decimal, str]]) -> SafeString:
    return format_html_join(
        "",
        '<li><span class="swatch {}"></span>{} % → {}</li>',
        (
            (SPLIT_CLASSES[index % len(SPLIT_CLASSES)], percent_text(share), label)
            for index, (share, label) in enumerate(parts)
        ),
    )


# Plans -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimelineStep:
    step: RolloutStep
    status: str  # done | current | next | pending
    soak_until: datetime | None


def plan_timeline(plan: RolloutPlan, steps: list[RolloutStep]) -> list[TimelineStep]:
    """The plan's steps in order: applied ones done (the last applied one is current while the
    plan has not finished), the first pending one next."""
    applied = [s for s in steps if s.applied_at is not None]
    current = applied[-1] if applied else None
    upcoming = next((s for s in steps if s.applied_at is None), None)
    finished = plan.status in (RolloutPlan.Status.COMPLETED, RolloutPlan.Status.ABORTED)
    timeline = []
    for step in steps:
        if step is current and not finished:
            status = "current"
        elif step.applied_at is not None:
            status = "done"
        elif step is upcoming and not finished:
            status = "next"
        else:
            status = "pending"
        soak_until = (
            step.applied_at + timedelta(seconds=step.min_soak_seconds)
            if step.applied_at is not None
            else None
        )
        timeline.append(TimelineStep(step, status, soak_until))
    return timeline


def plan_next_due(plan: RolloutPlan, steps: list[RolloutStep], now: datetime) -> tuple[datetime | None, str]:
    """When the periodic advance next moves the plan, and what it will do then; (None, why)
    when it will not."""
    if plan.status not in (RolloutPlan.Status.RUNNING, RolloutPlan.Status.PAUSED):
        return None, f"not moving: the plan is {plan.get_status_display().lower()}"
    applied = [s for s in steps if s.applied_at is not None]
    upcoming = next((s for s in steps if s.applied_at is None), None)
    due = now
    if applied and applied[-1].applied_at is not None:
        due = max(due, applied[-1].applied_at + timedelta(seconds=applied[-1].min_soak_seconds))
    if upcoming is not None and upcoming.not_before is not None:
        due = max(due, upcoming.not_before)
    what = (
        f"step {upcoming.position}: {upcoming.environment} at {percent_text(upcoming.percentage)} %"
        if upcoming is not None
        else "completes the plan"
    )
    if plan.status == RolloutPlan.Status.PAUSED:
        return None, f"paused; once resumed, {what}"
    return due, what


# Stale and dead flags ------------------------------------------------------------------------
@dataclass(frozen=True)
class Staleness:
    """Why a flag looks finished with in one environment, and since when."""

    kind: str  # settled | unevaluated | never
    reason: str
    since: datetime


def settled_text(state: FlagState, flag: Flag) -> str | None:
    """How a state serves every unit the same value (off; on for everyone; 0 %; one variant at
    100 %), or None when units still differ. Targets and rules make units differ, except when
    the flag is off (off serves the default to everyone)."""
    if not state.enabled:
        return "off"
    if state.targets or state.rules:
        return None
    if state.variants:
        whole = [
            v
            for v in state.variants
            if isinstance(v, dict)
            and v.get("weight") == TOTAL_WEIGHT
            and not isinstance(v.get("weight"), bool)
        ]
        if len(whole) == 1:
            return f"one variant at 100 % ({value_text(flag.kind, whole[0].get('value'))})"
        return None
    if state.percentage >= 100:
        return f"on for everyone ({value_text(flag.kind, rollout_value(flag, state.value))})"
    if state.percentage <= 0:
        return "0 %: everyone gets the default"
    return None


def staleness(
    state: FlagState,
    flag: Flag,
    *,
    now: datetime,
    days: int,
    last_evaluated: datetime | None,
    reporting_since: datetime | None,
    telemetry: bool,
) -> list[Staleness]:
    """Every reason ``state`` is a cleanup candidate, judged at ``now`` with ``days`` of
    patience: settled and unchanged that long, or (with telemetry) not evaluated that long.
    ``reporting_since`` is when the environment's SDKs began to report evaluations: a flag
    never evaluated where nothing reports is unknown, not dead."""
    cutoff = now - timedelta(days=days)
    found = []
    settled = settled_text(state, flag)
    if settled is not None and state.updated_at is not None and state.updated_at <= cutoff:
        found.append(Staleness("settled", f"{settled}, unchanged for {days}+ days", state.updated_at))
    if telemetry:
        if last_evaluated is not None:
            if last_evaluated <= cutoff:
                found.append(Staleness("unevaluated", f"not evaluated in {days}+ days", last_evaluated))
        elif reporting_since is not None:
            since = max(reporting_since, flag.created_at) if flag.created_at else reporting_since
            if since <= cutoff:
                found.append(Staleness("never", f"never evaluated here in {days}+ days of telemetry", since))
    return found
