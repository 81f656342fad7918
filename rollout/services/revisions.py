"""Revisions: every change to an environment's flags makes a new immutable snapshot of its
flag set, checked by the SDK's own rules before it is saved and published after commit."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction

from analemma_sdk.flags.spec import STATE_FIELDS, check_publishable, flag_set_document
from audit.services import audit_record

from ..models import Environment, FlagState, Revision
from ..selectors import flag_states_of, revision_latest
from .documents import document_body, document_etag, document_publish, flag_document


class UnknownRevision(LookupError):
    pass


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


def revision_create(
    *, environment: Environment, actor: str, reason: str = "", rolled_back_to: int | None = None
) -> Revision:
    """Snapshot the environment's flag states as its next revision; publish after commit.
    Raises InvalidDocumentError (nothing saved) for a flag set some SDK would refuse."""
    environment = Environment.objects.select_for_update().get(pk=environment.pk)
    previous = revision_latest(environment=environment)
    number = previous.number + 1 if previous else 1
    flags = {state.flag.key: flag_document(state) for state in flag_states_of(environment=environment)}
    document = flag_set_document(environment.key, number, flags)
    body = document_body(document)
    diff = _diff(previous.document["flags"] if previous else {}, flags)
    check_publishable(document, body, changed={change["flag"] for change in diff})
    revision = Revision.objects.create(
        environment=environment,
        number=number,
        document=document,
        etag=document_etag(body),
        diff=diff,
        reason=reason,
        created_by=actor,
        rolled_back_to=rolled_back_to,
    )
    # Straight into the cache once committed: a cache write is cheap, and SDKs see the change
    # on their next poll. (rollout.publish_flagset republishes a revision from a worker.)
    transaction.on_commit(lambda: document_publish(revision=revision))
    return revision


def revision_rollback(*, environment: Environment, number: int, actor: str, reason: str = "") -> Revision:
    """A new revision equal to revision ``number``: every flag state goes back to it."""
    with transaction.atomic():
        target = Revision.objects.filter(environment=environment, number=number).first()
        if target is None:
            raise UnknownRevision(f"{environment} has no revision {number}")
        wanted = target.document["flags"]
        for state in (
            FlagState.objects.select_for_update().filter(environment=environment).select_related("flag")
        ):
            config = wanted.get(state.flag.key)
            if config is None:  # created after that revision: off, as it was then
                state.enabled = False
            else:
                for field in STATE_FIELDS:
                    setattr(
                        state, field, Decimal(str(config[field])) if field == "percentage" else config[field]
                    )
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
