"""Flags and their per-environment state. Every change is checked against the flag-set
document's own rules (``analemma_sdk.flags.spec``) before anything is saved, makes a new
revision of the environment and lands in the audit log."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from analemma_sdk.flags.spec import STATE_FIELDS, InvalidFlagError, check_flag, check_sdk_flag, flag_spec
from audit.services import audit_record

from ..models import Environment, Flag, FlagState, Revision
from .documents import flag_document
from .revisions import revision_create

# The right to change what a flag serves, whatever the path: the flag's page, the kill switch,
# a rollback, or a rollout plan (which needs it to start, resume and abort, and whose operator
# must keep it for the plan to advance).
FLAG_CHANGE_PERMISSION = "rollout.change_flagstate"


def flag_change_allowed(*, user: Any) -> bool:
    """Whether ``user`` (an active account) may change flag states."""
    return bool(user is not None and user.is_active and user.has_perm(FLAG_CHANGE_PERMISSION))


def _percentage(flag: Flag, value: Any) -> Decimal:
    try:
        number = Decimal(str(value))
        in_range = Decimal(0) <= number <= Decimal(100)
    except InvalidOperation:
        raise InvalidFlagError(flag.key, f"percentage must be a number, got {value!r}") from None
    if not in_range:
        raise InvalidFlagError(flag.key, f"percentage must be 0-100, got {value}")
    if number != number.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP):
        raise InvalidFlagError(flag.key, f"percentage takes at most two decimals, got {value}")
    return number


def _check(key: str, spec: dict[str, Any]) -> None:
    """The changed flag, before anything is assigned: the model's own cleaning would coerce
    (a seed of "7" to 7) what the document's rules refuse. revision_create then checks the
    whole document as it will be served."""
    check_flag(key, spec)
    check_sdk_flag(key, spec)


def flag_definition_check(*, key: str, kind: str, default_value: Any) -> None:
    """InvalidFlagError unless a flag of ``kind`` can serve ``default_value`` (and, for a flag
    the SDK reads itself, it is within the SDK's bounds)."""
    _check(key, flag_spec(kind, default_value))


def flag_create(
    *, key: str, kind: str, default_value: Any, actor: str, description: str = "", owner: str = ""
) -> Flag:
    """A new flag, off in every environment (each gets a new revision). A default the kind
    cannot serve raises InvalidFlagError; other bad fields ValidationError; nothing is saved."""
    with transaction.atomic():
        flag = Flag(key=key, kind=kind, default_value=default_value, description=description, owner=owner)
        flag.full_clean()
        flag_definition_check(key=key, kind=kind, default_value=default_value)
        flag.save()
        for environment in Environment.objects.all():
            FlagState.objects.create(flag=flag, environment=environment, enabled=False, value=default_value)
            revision_create(
                environment=environment, actor=actor, reason=f"created flag {key}", flag_keys=[key]
            )
        audit_record(action="flag.create", actor=actor, target=key, kind=kind, default=default_value)
    return flag


def flag_details_update(*, flag: Flag, actor: str, description: str, owner: str) -> Flag:
    """Describe a flag (what SDKs are served does not change, so no revision)."""
    with transaction.atomic():
        locked = Flag.objects.select_for_update().get(pk=flag.pk)
        before = {"description": locked.description, "owner": locked.owner}
        locked.description, locked.owner = description, owner
        locked.full_clean()
        locked.save(update_fields=["description", "owner"])
        after = {"description": description, "owner": owner}
        if before != after:
            audit_record(action="flag.describe", actor=actor, target=flag.key, before=before, after=after)
    return locked


def flag_state_update(
    *, flag: Flag, environment: Environment, actor: str, reason: str = "", **changes: Any
) -> Revision:
    """Change a flag's state in one environment; returns the new revision. An invalid state
    raises InvalidFlagError (or ValidationError) and changes nothing."""
    unknown = set(changes) - set(STATE_FIELDS)
    if unknown:
        raise InvalidFlagError(flag.key, f"unknown flag state fields: {', '.join(sorted(unknown))}")
    if "percentage" in changes:
        changes["percentage"] = _percentage(flag, changes["percentage"])
    with transaction.atomic():
        state = (
            FlagState.objects.select_for_update()
            .select_related("flag")
            .get(flag=flag, environment=environment)
        )
        before = flag_document(state)
        candidate = {**before, **changes}
        if "percentage" in changes:
            candidate["percentage"] = float(changes["percentage"])
        _check(flag.key, candidate)
        for field, value in changes.items():
            setattr(state, field, value)
        try:
            state.full_clean(exclude=["flag", "environment"])
        except ValidationError as exc:
            raise InvalidFlagError(flag.key, "; ".join(exc.messages)) from None
        state.save()
        revision = revision_create(environment=environment, actor=actor, reason=reason, flag_keys=[flag.key])
        audit_record(
            action="flag.update",
            actor=actor,
            target=flag.key,
            environment=environment.key,
            revision=revision.number,
            reason=reason,
            before=before,
            after=flag_document(state),
        )
    return revision


class _DryRun(Exception):
    pass


def flag_state_check(*, flag: Flag, environment: Environment, **changes: Any) -> None:
    """Raise what flag_state_update would raise for these changes (InvalidFlagError, a
    refused document), and save nothing: the change is made and its revision built by the
    same code, then rolled back. Lets a page check every change before it saves any."""
    try:
        with transaction.atomic():
            flag_state_update(flag=flag, environment=environment, actor="check", **changes)
            raise _DryRun
    except _DryRun:
        pass


def flag_kill(*, flag: Flag, environment: Environment, actor: str, reason: str = "") -> Revision:
    """The kill switch: off in that environment, everyone gets the default."""
    with transaction.atomic():
        revision = flag_state_update(
            flag=flag, environment=environment, actor=actor, reason=reason or "kill switch", enabled=False
        )
        audit_record(
            action="flag.kill",
            actor=actor,
            target=flag.key,
            environment=environment.key,
            revision=revision.number,
        )
    return revision
