"""Rollout plans: start, advance (periodic task), pause, resume, abort, with guard hooks.

A guard is any callable ``guard(plan, step) -> GuardVerdict`` named in settings.ROLLOUT_GUARDS
(dotted paths). Before each step the plan asks every guard; one that says no aborts the plan,
which rolls every touched environment back to its baseline revision. Guards that read real
metrics (error rates, latency of the cohort) plug in here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from audit.services import audit_record

from ..models import RolloutPlan, RolloutStep
from ..selectors import revision_numbers_latest
from .flags import flag_state_update
from .revisions import revision_rollback


@dataclass(frozen=True)
class GuardVerdict:
    ok: bool
    reason: str = ""


Guard = Callable[[RolloutPlan, RolloutStep], GuardVerdict]


class PlanStateError(ValueError):
    pass


def _guards() -> list[Guard]:
    return [import_string(path) for path in getattr(settings, "ROLLOUT_GUARDS", [])]


def plan_start(*, plan: RolloutPlan, actor: str) -> RolloutPlan:
    with transaction.atomic():
        plan = RolloutPlan.objects.select_for_update().get(pk=plan.pk)
        if plan.status != RolloutPlan.Status.DRAFT:
            raise PlanStateError(f"plan is {plan.status}, only a draft can start")
        if not plan.steps.exists():
            raise PlanStateError("plan has no steps")
        plan.baseline = revision_numbers_latest(
            environments=[step.environment for step in plan.steps.select_related("environment")]
        )
        plan.status = RolloutPlan.Status.RUNNING
        plan.save(update_fields=["baseline", "status", "updated_at"])
        audit_record(action="plan.start", actor=actor, target=plan.name, flag=plan.flag.key)
    plans_advance(plan_ids=[plan.pk])
    return RolloutPlan.objects.get(pk=plan.pk)


def _set_status(
    plan: RolloutPlan, status: str, allowed: tuple[str, ...], actor: str, action: str
) -> RolloutPlan:
    with transaction.atomic():
        plan = RolloutPlan.objects.select_for_update().get(pk=plan.pk)
        if plan.status not in allowed:
            raise PlanStateError(f"plan is {plan.status}; cannot {action}")
        plan.status = status
        plan.save(update_fields=["status", "updated_at"])
        audit_record(action=f"plan.{action}", actor=actor, target=plan.name, flag=plan.flag.key)
    return plan


def plan_pause(*, plan: RolloutPlan, actor: str) -> RolloutPlan:
    return _set_status(plan, RolloutPlan.Status.PAUSED, (RolloutPlan.Status.RUNNING,), actor, "pause")


def plan_resume(*, plan: RolloutPlan, actor: str) -> RolloutPlan:
    return _set_status(plan, RolloutPlan.Status.RUNNING, (RolloutPlan.Status.PAUSED,), actor, "resume")


def plan_abort(*, plan: RolloutPlan, actor: str, reason: str = "aborted") -> RolloutPlan:
    """Stop and restore every environment the plan touched to its revision from before."""
    with transaction.atomic():
        plan = RolloutPlan.objects.select_for_update().get(pk=plan.pk)
        if plan.status in (RolloutPlan.Status.ABORTED, RolloutPlan.Status.DRAFT):
            raise PlanStateError(f"plan is {plan.status}; nothing to abort")
        touched = {
            s.environment for s in plan.steps.filter(applied_at__isnull=False).select_related("environment")
        }
        for environment in sorted(touched, key=lambda e: e.pk):
            number = plan.baseline.get(environment.key)
            if number:
                revision_rollback(
                    environment=environment, number=number, actor=actor, reason=f"plan {plan.name}: {reason}"
                )
        plan.status = RolloutPlan.Status.ABORTED
        plan.reason = reason
        plan.save(update_fields=["status", "reason", "updated_at"])
        audit_record(action="plan.abort", actor=actor, target=plan.name, flag=plan.flag.key, reason=reason)
    return plan


def plans_advance(*, now: datetime | None = None, plan_ids: list[int] | None = None) -> int:
    """Apply the next due step of every running plan; returns how many steps were applied."""
    now = now or timezone.now()
    running = RolloutPlan.objects.filter(status=RolloutPlan.Status.RUNNING)
    if plan_ids is not None:
        running = running.filter(pk__in=plan_ids)
    applied = 0
    for plan_id in running.values_list("pk", flat=True):
        applied += _advance_one(plan_id, now)
    return applied


def _advance_one(plan_id: int, now: datetime) -> int:
    with transaction.atomic():
        plan = RolloutPlan.objects.select_for_update(skip_locked=True).filter(pk=plan_id).first()
        if plan is None or plan.status != RolloutPlan.Status.RUNNING:
            return 0
        steps = list(plan.steps.select_related("environment").order_by("position"))
        done = [s for s in steps if s.applied_at is not None]
        pending = [s for s in steps if s.applied_at is None]
        last = done[-1] if done else None
        if (
            last is not None
            and last.applied_at
            and now < last.applied_at + timedelta(seconds=last.min_soak_seconds)
        ):
            return 0  # still soaking
        if not pending:
            plan.status = RolloutPlan.Status.COMPLETED
            plan.save(update_fields=["status", "updated_at"])
            audit_record(action="plan.complete", actor="rollout plan", target=plan.name, flag=plan.flag.key)
            return 0
        step = pending[0]
        if step.not_before and now < step.not_before:
            return 0
        refusal = next((v for v in (guard(plan, step) for guard in _guards()) if not v.ok), None)
        if refusal is not None:
            # Abort after this transaction: the rollback takes its own locks.
            transaction.on_commit(lambda: plan_abort(plan=plan, actor="rollout guard", reason=refusal.reason))
            return 0
        revision = flag_state_update(
            flag=plan.flag,
            environment=step.environment,
            actor="rollout plan",
            reason=f"plan {plan.name} step {step.position}",
            enabled=True,
            value=plan.value,
            percentage=step.percentage,
        )
        step.applied_at = now
        step.revision_number = revision.number
        step.save(update_fields=["applied_at", "revision_number"])
        return 1
