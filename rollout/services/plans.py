"""Rollout plans: create, update, start, advance (periodic task), pause, resume, abort, with
guard hooks.

* A plan is checked when it is created or edited, and again when it starts: its value must be
  one the flag can serve (the SDK's own rules, ``analemma_sdk.flags.spec``), its steps
  percentages of existing environments. Once started, its flag, value and steps are frozen.
* Starting, resuming and aborting a plan change flags, so they need the right to change flag
  states (``FLAG_CHANGE_PERMISSION``), like any other flag change. The periodic advance acts
  for the operator who started (or last resumed) the plan: before each step it checks that
  they still have that right, and pauses the plan with an audit entry when they do not.
* A plan whose step fails is marked failed with its reason and audited; the other plans go on.
* An abort restores only the plan's flag, in each environment the plan touched, to its state
  just before the plan first changed it there: another operator's change to another flag, or
  to this flag before the plan reached that environment, stays.

A guard is any callable ``guard(plan, step) -> GuardVerdict`` named in settings.ROLLOUT_GUARDS
(dotted paths); ``step`` is the next step (the last one when none is left). The periodic
advance asks every guard at each run once a step is live (while it soaks too, so harm stops a
step early), and before the first step. A verdict passes, waits (``wait``: not enough data
yet; the plan neither advances nor completes) or fails: the plan is aborted, the audit entry
carries the guard's ``evidence`` (its numbers), and settings.ROLLOUT_WEBHOOK_URL, when set, is
told (``rollout.webhooks``). The built-in guard, ``telemetry.guards.step_guard``, judges each
step on its own rules (``RolloutStep.guards``, see ``rollout.guard_rules``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from analemma_sdk.flags.spec import InvalidFlagError, check_flag, check_sdk_flag, flag_spec
from audit.services import audit_record

from ..guard_rules import GuardRuleError, check_guarded_flag, clean_rules
from ..models import Environment, Flag, RolloutPlan, RolloutStep
from ..selectors import revision_numbers_latest
from ..webhooks import webhook_notify
from .flags import flag_change_allowed, flag_state_update
from .revisions import flag_rollback, rollback_preview

logger = logging.getLogger("analemma.rollout")

ACTOR_MAX = 150  # AuditEntry.actor, Revision.created_by
STEP_FIELDS = ("environment", "percentage", "not_before", "min_soak_seconds", "guards")
OPERATOR_LOST_RIGHT = "operator lost the right"
MAX_SOAK_SECONDS = 366 * 24 * 3600


@dataclass(frozen=True)
class GuardVerdict:
    """``ok``: the plan may go on. Not ok and ``wait``: not yet (too little data); not ok and
    not ``wait``: abort. ``evidence``: the numbers behind it, JSON, kept in the audit entry."""

    ok: bool
    reason: str = ""
    wait: bool = False
    evidence: Mapping[str, Any] | None = None


Guard = Callable[[RolloutPlan, RolloutStep], GuardVerdict]


class PlanStateError(ValueError):
    """The plan is in a state that does not allow the operation (nothing changed)."""


class InvalidPlanError(ValueError):
    """The plan's definition is wrong (nothing saved); the message says what."""


class PlanPermissionDenied(PermissionDenied):
    """The acting user may not make the flag changes the operation makes."""


def _guards() -> list[Guard]:
    return [import_string(path) for path in getattr(settings, "ROLLOUT_GUARDS", [])]


def _require_flag_right(user: Any, what: str) -> None:
    if not flag_change_allowed(user=user):
        name = user.get_username() if user is not None else "nobody"
        raise PlanPermissionDenied(
            f"{name} may not {what}: it changes flags (needs the right to change flag states)"
        )


def _locked(pk: Any) -> RolloutPlan:
    """The plan, its row locked (only its row: not its flag's or its operator's)."""
    return RolloutPlan.objects.select_for_update(of=("self",)).select_related("flag").get(pk=pk)


def _actor(actor: str, user: Any) -> str:
    if not actor and user is None:
        raise ValueError("an operation on a plan needs a user or an actor")
    return (actor or user.get_username())[:ACTOR_MAX]


# Definition --------------------------------------------------------------------------------
def plan_check_value(*, flag: Flag, value: Any) -> None:
    """InvalidPlanError unless ``value`` is one the flag can serve, by the SDK's own rules."""
    if value is None:
        raise InvalidPlanError(f"a plan must serve a value: give one of the {flag.kind} flag's values")
    spec = flag_spec(flag.kind, flag.default_value, enabled=True, value=value)
    try:
        check_flag(flag.key, spec)
        check_sdk_flag(flag.key, spec)
    except InvalidFlagError as exc:
        raise InvalidPlanError(str(exc)) from None


def plan_check_steps(*, steps: Iterable[Mapping[str, Any]], flag: Flag | None = None) -> None:
    """InvalidPlanError unless every step is one plan_create accepts (see there) for a plan on
    ``flag`` (its guards are not checked against a flag when none is given)."""
    _clean_steps(steps, flag=flag)


def _clean_steps(steps: Iterable[Mapping[str, Any]], *, flag: Flag | None) -> list[dict[str, Any]]:
    """Steps in order (by ``position`` when given, else as listed), numbered from 0, each
    checked by the model's own rules; guards only on a ``flag`` the cohorts record."""

    def order(item: tuple[int, Mapping[str, Any]]) -> tuple[int, int]:
        given = item[1].get("position")
        return (given if isinstance(given, int) else item[0], item[0])

    indexed = sorted(enumerate(steps), key=order)
    cleaned = []
    for position, (_, step) in enumerate(indexed):
        unknown = set(step) - {*STEP_FIELDS, "position"}
        if unknown:
            raise InvalidPlanError(f"unknown step fields: {', '.join(sorted(unknown))}")
        if not isinstance(step.get("environment"), Environment):
            raise InvalidPlanError(f"step {position} has no environment")
        try:
            percentage = Decimal(str(step.get("percentage")))
        except ArithmeticError:
            raise InvalidPlanError(
                f"step {position}: percentage must be a number from 0 to 100, not {step.get('percentage')!r}"
            ) from None
        guards = _step_guards(position, step.get("guards"), percentage, flag)
        row = RolloutStep(
            position=position,
            environment=step["environment"],
            percentage=percentage,
            not_before=step.get("not_before"),
            min_soak_seconds=step.get("min_soak_seconds") or 0,
            guards=guards,
        )
        try:
            row.full_clean(exclude=["plan"])
        except ValidationError as exc:
            raise InvalidPlanError(f"step {position}: {'; '.join(exc.messages)}") from None
        if row.min_soak_seconds > MAX_SOAK_SECONDS:
            raise InvalidPlanError(
                f"step {position}: a soak is at most {MAX_SOAK_SECONDS:,} seconds (a year), "
                f"not {row.min_soak_seconds:,}"
            )
        cleaned.append({"position": position, **{f: getattr(row, f) for f in STEP_FIELDS}})
    return cleaned


def _step_guards(position: int, rules: Any, percentage: Decimal, flag: Flag | None) -> list[dict[str, Any]]:
    """A step's guard rules, cleaned: only where there is a treatment and a control to compare,
    on a ``flag`` the cohorts record (unchecked when None)."""
    try:
        guards = clean_rules(rules)
        if guards and flag is not None:
            check_guarded_flag(flag.key)
    except GuardRuleError as exc:
        raise InvalidPlanError(f"step {position}: guard: {exc}") from None
    if guards and not 0 < percentage < 100:
        raise InvalidPlanError(
            f"step {position}: a guard compares the step's treatment with its control: "
            f"a step at {percentage} % has no {'control' if percentage >= 100 else 'treatment'} to compare"
        )
    return guards


def _steps_of(plan: RolloutPlan, steps: Iterable[RolloutStep] | None = None) -> list[dict[str, Any]]:
    """A saved plan's steps as _clean_steps takes them."""
    if steps is None:
        steps = plan.steps.select_related("environment").order_by("position")
    return [{"position": s.position, **{f: getattr(s, f) for f in STEP_FIELDS}} for s in steps]


def _step_record(step: Mapping[str, Any]) -> dict[str, Any]:
    not_before = step["not_before"]
    return {
        "position": step["position"],
        "environment": step["environment"].key,
        "percentage": float(step["percentage"]),
        "not_before": not_before.isoformat() if not_before else None,
        "min_soak_seconds": step["min_soak_seconds"],
        "guards": step["guards"],
    }


def _record(plan: RolloutPlan) -> dict[str, Any]:
    """What the audit log keeps of a plan's definition."""
    steps = plan.steps.select_related("environment").order_by("position")
    return {
        "name": plan.name,
        "flag": plan.flag.key,
        "value": plan.value,
        "steps": [_step_record({f: getattr(s, f) for f in ("position", *STEP_FIELDS)}) for s in steps],
    }


def plan_create(
    *, name: str, flag: Flag, value: Any, steps: Iterable[Mapping[str, Any]], actor: str
) -> RolloutPlan:
    """A draft plan. Each step is a mapping of ``environment`` (an Environment), ``percentage``
    and optionally ``not_before``, ``min_soak_seconds`` and ``position``. Raises
    InvalidPlanError, saving nothing, for a value the flag cannot serve or a bad step."""
    plan_check_value(flag=flag, value=value)
    cleaned = _clean_steps(steps, flag=flag)
    with transaction.atomic():
        plan = RolloutPlan(name=name, flag=flag, value=value, created_by=actor[:ACTOR_MAX])
        try:
            plan.full_clean(exclude=["started_by"])
        except ValidationError as exc:
            raise InvalidPlanError("; ".join(exc.messages)) from None
        plan.save()
        RolloutStep.objects.bulk_create(RolloutStep(plan=plan, **step) for step in cleaned)
        audit_record(
            action="plan.create",
            actor=actor,
            target=plan.name,
            flag=flag.key,
            plan=plan.pk,
            after=_record(plan),
        )
    return plan


def plan_update(
    *,
    plan: RolloutPlan,
    actor: str,
    name: str | None = None,
    flag: Flag | None = None,
    value: Any = ...,
    steps: Iterable[Mapping[str, Any]] | None = None,
) -> RolloutPlan:
    """Edit a plan; what is not given stays. Only a draft's flag, value and steps can change:
    a started plan's are frozen (PlanStateError); its name can still change."""
    with transaction.atomic():
        locked = _locked(plan.pk)
        before = _record(locked)
        frozen = {"flag": flag is not None, "value": value is not ..., "steps": steps is not None}
        if locked.status != RolloutPlan.Status.DRAFT and any(frozen.values()):
            what = ", ".join(k for k, given in frozen.items() if given)
            raise PlanStateError(
                f"plan is {locked.status}: its {what} cannot change once started (abort it and make a new plan)"
            )
        new_flag = flag if flag is not None else locked.flag
        new_value = locked.value if value is ... else value
        if flag is not None or value is not ...:
            plan_check_value(flag=new_flag, value=new_value)
        if steps is not None:
            cleaned: list[dict[str, Any]] | None = _clean_steps(steps, flag=new_flag)
        else:  # the steps kept must still suit the flag (their guards)
            cleaned = None
            _clean_steps(_steps_of(locked), flag=new_flag)
        locked.flag, locked.value = new_flag, new_value
        if name is not None:
            locked.name = name
        try:
            locked.full_clean(exclude=["started_by"])
        except ValidationError as exc:
            raise InvalidPlanError("; ".join(exc.messages)) from None
        locked.save()
        if cleaned is not None:
            locked.steps.all().delete()
            RolloutStep.objects.bulk_create(RolloutStep(plan=locked, **step) for step in cleaned)
        after = _record(locked)
        if after != before:
            audit_record(
                action="plan.update",
                actor=actor,
                target=locked.name,
                flag=locked.flag.key,
                plan=locked.pk,
                before=before,
                after=after,
            )
    return locked


def plan_delete(*, plan: RolloutPlan, actor: str) -> None:
    """Delete a draft (a started plan stays, as the record of what it did)."""
    with transaction.atomic():
        locked = _locked(plan.pk)
        if locked.status != RolloutPlan.Status.DRAFT:
            raise PlanStateError(f"plan is {locked.status}; only a draft can be deleted")
        before = _record(locked)
        locked.delete()
        audit_record(
            action="plan.delete", actor=actor, target=before["name"], flag=before["flag"], before=before
        )


# Operations --------------------------------------------------------------------------------
def plan_start(*, plan: RolloutPlan, user: Any, actor: str = "") -> RolloutPlan:
    """Start a draft and apply its first step now. ``user`` needs the right to change flag
    states; the periodic advance then acts for them. Raises PlanPermissionDenied,
    PlanStateError or InvalidPlanError and changes nothing; a first step that fails marks the
    plan failed (see its ``reason``)."""
    _require_flag_right(user, "start a plan")
    actor = _actor(actor, user)
    with transaction.atomic():
        plan = _locked(plan.pk)
        if plan.status != RolloutPlan.Status.DRAFT:
            raise PlanStateError(f"plan is {plan.status}, only a draft can start")
        steps = list(plan.steps.select_related("environment").order_by("position"))
        if not steps:
            raise PlanStateError("plan has no steps")
        plan_check_value(flag=plan.flag, value=plan.value)
        _clean_steps(_steps_of(plan, steps), flag=plan.flag)
        plan.baseline = revision_numbers_latest(environments=[step.environment for step in steps])
        plan.status = RolloutPlan.Status.RUNNING
        plan.started_by = user
        plan.reason = ""
        plan.save(update_fields=["baseline", "status", "started_by", "reason", "updated_at"])
        audit_record(
            action="plan.start",
            actor=actor,
            target=plan.name,
            flag=plan.flag.key,
            plan=plan.pk,
            operator=user.get_username(),
            baseline=plan.baseline,
        )
    plans_advance(plan_ids=[plan.pk])
    return RolloutPlan.objects.get(pk=plan.pk)


def _set_status(
    plan: RolloutPlan,
    status: str,
    allowed: tuple[str, ...],
    actor: str,
    action: str,
    *,
    reason: str | None = None,
    started_by: Any = None,
) -> RolloutPlan:
    with transaction.atomic():
        plan = _locked(plan.pk)
        if plan.status not in allowed:
            raise PlanStateError(f"plan is {plan.status}; cannot {action}")
        plan.status = status
        fields = ["status", "updated_at"]
        detail: dict[str, Any] = {}
        if reason is not None:
            plan.reason = detail["reason"] = reason
            fields.append("reason")
        if started_by is not None:
            plan.started_by = started_by
            detail["operator"] = started_by.get_username()
            fields.append("started_by")
        plan.save(update_fields=fields)
        audit_record(
            action=f"plan.{action}", actor=actor, target=plan.name, flag=plan.flag.key, plan=plan.pk, **detail
        )
    return plan


def plan_pause(*, plan: RolloutPlan, user: Any = None, actor: str = "") -> RolloutPlan:
    """Hold a running plan where it is. It changes no flag, so it needs no flag right (nor a
    user: ``actor`` alone names who paused it)."""
    return _set_status(
        plan, RolloutPlan.Status.PAUSED, (RolloutPlan.Status.RUNNING,), _actor(actor, user), "pause"
    )


def plan_resume(*, plan: RolloutPlan, user: Any, actor: str = "") -> RolloutPlan:
    """Run a paused plan again. ``user`` needs the right to change flag states and becomes
    the operator the periodic advance acts for."""
    _require_flag_right(user, "resume a plan")
    return _set_status(
        plan,
        RolloutPlan.Status.RUNNING,
        (RolloutPlan.Status.PAUSED,),
        _actor(actor, user),
        "resume",
        reason="",
        started_by=user,
    )


def plan_abort(*, plan: RolloutPlan, user: Any, actor: str = "", reason: str = "aborted") -> RolloutPlan:
    """Stop the plan and restore its flag, in each environment it touched, to the flag's state
    before the plan (every other flag stays as it is). ``user`` needs the right to change
    flag states."""
    _require_flag_right(user, "abort a plan")
    return _abort(plan, _actor(actor, user), reason)


def _abort(
    plan: RolloutPlan, actor: str, reason: str, *, evidence: Mapping[str, Any] | None = None
) -> RolloutPlan:
    """``evidence``: a guard's numbers; the plan was aborted by it, and the webhook is told."""
    with transaction.atomic():
        plan = _locked(plan.pk)
        if plan.status in (RolloutPlan.Status.ABORTED, RolloutPlan.Status.DRAFT):
            raise PlanStateError(f"plan is {plan.status}; nothing to abort")
        touched = {
            s.environment for s in plan.steps.filter(applied_at__isnull=False).select_related("environment")
        }
        restored = {}
        for environment in sorted(touched, key=lambda e: e.pk):
            number = plan.baseline.get(environment.key)
            why = f"plan {plan.name}: {reason}"
            if number is None:  # no revision before the plan: the flag was not served
                revision = flag_state_update(
                    flag=plan.flag, environment=environment, actor=actor, reason=why, enabled=False
                )
            elif rollback_preview(environment=environment, number=number, flag_key=plan.flag.key):
                revision = flag_rollback(
                    environment=environment, flag_key=plan.flag.key, number=number, actor=actor, reason=why
                )
            else:
                continue  # already as it was
            restored[environment.key] = revision.number
        plan.status = RolloutPlan.Status.ABORTED
        plan.reason = reason
        plan.save(update_fields=["status", "reason", "updated_at"])
        detail: dict[str, Any] = {"guard": dict(evidence)} if evidence is not None else {}
        audit_record(
            action="plan.abort",
            actor=actor,
            target=plan.name,
            flag=plan.flag.key,
            plan=plan.pk,
            reason=reason,
            restored=restored,
            **detail,
        )
        if evidence is not None:
            webhook_notify(
                event="plan.guard_abort",
                plan={"id": plan.pk, "name": plan.name, "flag": plan.flag.key, "status": plan.status},
                reason=reason,
                restored=restored,
                verdict=dict(evidence),
            )
    return plan


# The periodic advance ----------------------------------------------------------------------
def plans_advance(*, now: datetime | None = None, plan_ids: list[int] | None = None) -> int:
    """Apply the next due step of every running plan; returns how many steps were applied.
    A plan whose step fails is marked failed; it never stops the others."""
    now = now or timezone.now()
    running = RolloutPlan.objects.filter(status=RolloutPlan.Status.RUNNING)
    if plan_ids is not None:
        running = running.filter(pk__in=plan_ids)
    applied = 0
    for plan_id in list(running.values_list("pk", flat=True)):
        try:
            applied += _advance_one(plan_id, now)
        except (OperationalError, InterfaceError):
            # The database was away: nothing was applied, the next run tries again.
            logger.exception("rollout plan %s: database unavailable, will retry", plan_id)
        except Exception as exc:
            logger.exception("rollout plan %s failed", plan_id)
            _fail(plan_id, exc)
    return applied


def _failure_reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(exc.messages)
    if isinstance(exc, ValueError):  # the services' refusals say what is wrong
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _fail(plan_id: int, exc: Exception) -> None:
    reason = _failure_reason(exc)
    with transaction.atomic():
        plan = (
            RolloutPlan.objects.select_for_update(of=("self",))
            .select_related("flag")
            .filter(pk=plan_id)
            .first()
        )
        if plan is None or plan.status != RolloutPlan.Status.RUNNING:
            return
        plan.status = RolloutPlan.Status.FAILED
        plan.reason = reason[:2000]
        plan.save(update_fields=["status", "reason", "updated_at"])
        audit_record(
            action="plan.fail",
            actor="rollout plan",
            target=plan.name,
            flag=plan.flag.key,
            plan=plan.pk,
            reason=plan.reason,
        )


def _guards_hold(plan: RolloutPlan, step: RolloutStep) -> bool:
    """Whether a guard stops the plan where it is: one fails (the plan is then aborted, after
    this transaction: the rollback takes its own locks) or waits (too little data yet)."""
    verdicts = [guard(plan, step) for guard in _guards()]
    refusal = next((v for v in verdicts if not v.ok and not v.wait), None)
    if refusal is not None:
        evidence = refusal.evidence or {}
        transaction.on_commit(lambda: _abort(plan, "rollout guard", refusal.reason, evidence=evidence))
        return True
    return any(not v.ok for v in verdicts)


def _advance_one(plan_id: int, now: datetime) -> int:
    with transaction.atomic():
        plan = (
            RolloutPlan.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("flag", "started_by")
            .filter(pk=plan_id)
            .first()
        )
        if plan is None or plan.status != RolloutPlan.Status.RUNNING:
            return 0
        steps = list(plan.steps.select_related("environment").order_by("position"))
        done = [s for s in steps if s.applied_at is not None]
        pending = [s for s in steps if s.applied_at is None]
        last = done[-1] if done else None
        if last is not None and _guards_hold(plan, pending[0] if pending else last):
            return 0  # a live step's guards watch it every run, soaking or not
        if (
            last is not None
            and last.applied_at
            and now < last.applied_at + timedelta(seconds=last.min_soak_seconds)
        ):
            return 0  # still soaking
        if not pending:
            plan.status = RolloutPlan.Status.COMPLETED
            plan.save(update_fields=["status", "updated_at"])
            audit_record(
                action="plan.complete",
                actor="rollout plan",
                target=plan.name,
                flag=plan.flag.key,
                plan=plan.pk,
            )
            return 0
        step = pending[0]
        if step.not_before and now < step.not_before:
            return 0
        operator = plan.started_by
        if not flag_change_allowed(user=operator):
            plan.status = RolloutPlan.Status.PAUSED
            plan.reason = OPERATOR_LOST_RIGHT
            plan.save(update_fields=["status", "reason", "updated_at"])
            audit_record(
                action="plan.pause",
                actor="rollout plan",
                target=plan.name,
                flag=plan.flag.key,
                plan=plan.pk,
                reason=OPERATOR_LOST_RIGHT,
                operator=operator.get_username() if operator is not None else None,
            )
            return 0
        if last is None and _guards_hold(plan, step):
            return 0  # before the first step
        assert operator is not None  # flag_change_allowed refuses nobody
        if not any(s.environment_id == step.environment_id for s in done):
            # The plan's first step here: what an abort restores is the flag as it is now, so
            # a change another operator made since the start is not undone with the plan's.
            plan.baseline = {**plan.baseline, **revision_numbers_latest(environments=[step.environment])}
            plan.save(update_fields=["baseline", "updated_at"])
        revision = flag_state_update(
            flag=plan.flag,
            environment=step.environment,
            actor=f"rollout plan for {operator.get_username()}"[:ACTOR_MAX],
            reason=f"plan {plan.name} step {step.position}",
            enabled=True,
            value=plan.value,
            percentage=step.percentage,
        )
        step.applied_at = now
        step.revision_number = revision.number
        step.save(update_fields=["applied_at", "revision_number"])
        return 1
