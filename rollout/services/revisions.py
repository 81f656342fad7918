"""Revisions: every change to an environment's flags makes a new immutable revision,
checked by the SDK's own rules before it is saved and published after commit.

A revision writes only the flags it changes (closing their open ``FlagVersion`` and opening
a new one), so a change costs O(changed flags) in the database whatever the flag count; the
whole document is assembled in memory, from the cached previous one when it is there, to be
checked and published."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson
from django.db import transaction

from analemma_sdk.flags.spec import STATE_FIELDS, check_publishable, flag_set_document
from audit.services import audit_record

from ..models import Environment, FlagState, FlagVersion, Revision
from ..selectors import flag_states_of, revision_latest
from .documents import (
    document_body,
    document_cached,
    document_etag,
    document_publish_committed,
    flag_document,
)


class UnknownRevision(LookupError):
    pass


# The flags of the last revision this process committed, by environment id: the next change
# in the same process starts from them rather than parsing the cached document again.
_committed: dict[int, tuple[int, str, dict[str, Any]]] = {}


def _diff(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    changes = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if old is None or new is None:
            changes.append({"flag": key, "field": "*", "before": old, "after": new})
            continue
        for field in sorted(set(old) | set(new)):
            if old.get(field) != new.get(field):
                changes.append(
                    {"flag": key, "field": field, "before": old.get(field), "after": new.get(field)}
                )
    return changes


def _flags_before(environment: Environment, previous: Revision | None) -> dict[str, Any]:
    """Every flag's spec in ``previous``. A revision saved whole (before per-flag versions)
    opens its versions here, once."""
    if previous is None:
        return {}
    if previous.snapshot is not None:
        flags: dict[str, Any] = dict(previous.snapshot["flags"])
        if not FlagVersion.objects.filter(environment=environment, since=previous.number).exists():
            FlagVersion.objects.filter(environment=environment, until__isnull=True).update(
                until=previous.number
            )
            FlagVersion.objects.bulk_create(
                FlagVersion(environment=environment, flag_key=key, spec=spec, since=previous.number)
                for key, spec in sorted(flags.items())
            )
        return flags
    known = _committed.get(environment.pk)
    if known is not None and known[:2] == (previous.number, previous.etag):
        return dict(known[2])
    cached = document_cached(environment_key=environment.key)
    if cached is not None and cached["revision"] == previous.number and cached["etag"] == previous.etag:
        return dict(orjson.loads(cached["body"])["flags"])
    return previous.flags()


def revision_create(
    *,
    environment: Environment,
    actor: str,
    reason: str = "",
    rolled_back_to: int | None = None,
    flag_keys: Iterable[str] | None = None,
) -> Revision:
    """The environment's next revision: the flags ``flag_keys`` names (every flag when None)
    take their current state's spec, the others stay as they were. Publishes after commit.
    Raises InvalidDocumentError (nothing saved) for a flag set some SDK would refuse."""
    environment = Environment.objects.select_for_update().get(pk=environment.pk)
    previous = revision_latest(environment=environment)
    number = previous.number + 1 if previous else 1
    before = _flags_before(environment, previous)
    states = flag_states_of(environment=environment)
    if flag_keys is not None:
        states = states.filter(flag__key__in=sorted(set(flag_keys)))
    wanted = {state.flag.key: flag_document(state) for state in states}
    flags = {**before, **wanted} if flag_keys is not None else wanted
    document = flag_set_document(environment.key, number, flags)  # the body sorts its keys
    body = document_body(document)
    # Only the flags asked for can differ: compare those, not the whole set.
    compared = set(flags) | set(before) if flag_keys is None else set(wanted)
    diff = _diff(
        {k: before[k] for k in compared if k in before}, {k: flags[k] for k in compared if k in flags}
    )
    changed = sorted({change["flag"] for change in diff})
    check_publishable(document, body, changed=changed)
    revision = Revision.objects.create(
        environment=environment,
        number=number,
        etag=document_etag(body),
        diff=diff,
        reason=reason,
        created_by=actor,
        rolled_back_to=rolled_back_to,
    )
    FlagVersion.objects.filter(environment=environment, flag_key__in=changed, until__isnull=True).update(
        until=number
    )
    FlagVersion.objects.bulk_create(
        FlagVersion(environment=environment, flag_key=key, spec=flags[key], since=number)
        for key in changed
        if key in flags
    )

    # Straight into the cache once committed: SDKs see the change on their next poll.
    def committed() -> None:
        _committed[environment.pk] = (number, revision.etag, flags)
        document_publish_committed(revision=revision, body=body)

    transaction.on_commit(committed)
    return revision


def _target(environment: Environment, number: int) -> Revision:
    target = Revision.objects.filter(environment=environment, number=number).first()
    if target is None:
        raise UnknownRevision(f"{environment} has no revision {number}")
    return target


def _restore(state: FlagState, spec: dict[str, Any] | None) -> None:
    """Set a state to a revision's spec of it; a flag that revision did not have is off."""
    if spec is None:
        state.enabled = False
        return
    for field in STATE_FIELDS:
        setattr(state, field, Decimal(str(spec[field])) if field == "percentage" else spec[field])


def rollback_preview(
    *, environment: Environment, number: int, flag_key: str | None = None
) -> list[dict[str, Any]]:
    """Exactly what a rollback to revision ``number`` would change, as a revision diff: of one
    flag, or of the whole environment when ``flag_key`` is None. Empty: nothing to undo."""
    target = _target(environment, number)
    latest = revision_latest(environment=environment)
    assert latest is not None  # the target exists, so a latest does
    if flag_key is None:
        current, wanted = latest.flags(), target.flags()
        # A flag created since the target stays, switched off (it cannot be served unborn).
        for key in set(current) - set(wanted):
            wanted[key] = {**current[key], "enabled": False}
        return _diff(current, wanted)
    now, then = latest.flag(flag_key), target.flag(flag_key)
    if now is None:
        raise UnknownRevision(f"{environment} has no flag {flag_key}")
    return _diff({flag_key: now}, {flag_key: then if then is not None else {**now, "enabled": False}})


def flag_rollback(
    *, environment: Environment, flag_key: str, number: int, actor: str, reason: str = ""
) -> Revision:
    """One flag back to its state in revision ``number``; every other flag stays as it is.
    The default rollback: undoing one ramp never touches another operator's change."""
    with transaction.atomic():
        target = _target(environment, number)
        state = (
            FlagState.objects.select_for_update()
            .select_related("flag")
            .filter(environment=environment, flag__key=flag_key)
            .first()
        )
        if state is None:
            raise UnknownRevision(f"{environment} has no flag {flag_key}")
        _restore(state, target.flag(flag_key))
        state.save()
        revision = revision_create(
            environment=environment,
            actor=actor,
            reason=reason or f"{flag_key} back to r{number}",
            rolled_back_to=number,
            flag_keys=[flag_key],
        )
        audit_record(
            action="flag.rollback",
            actor=actor,
            target=flag_key,
            environment=environment.key,
            revision=revision.number,
            to=number,
            reason=reason,
            changes=revision.diff,
        )
    return revision


def revision_rollback(*, environment: Environment, number: int, actor: str, reason: str = "") -> Revision:
    """Restore the whole environment: a new revision equal to revision ``number`` (flags
    created since are switched off). The explicit, environment-wide action; a single flag
    goes back with flag_rollback."""
    with transaction.atomic():
        wanted = _target(environment, number).flags()
        for state in (
            FlagState.objects.select_for_update()
            .filter(environment=environment)
            .select_related("flag")
            .order_by("pk")  # one lock order: two restores of one environment cannot deadlock
        ):
            _restore(state, wanted.get(state.flag.key))
            state.save()
        revision = revision_create(
            environment=environment,
            actor=actor,
            reason=reason or f"rollback to r{number}",
            rolled_back_to=number,
        )
        audit_record(
            action="revision.rollback",
            actor=actor,
            target=f"{environment.key} r{number}",
            environment=environment.key,
            revision=revision.number,
            reason=reason,
        )
    return revision
