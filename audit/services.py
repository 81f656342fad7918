"""Writing to the audit log. Every change path calls this, inside the change's transaction,
so an entry exists exactly when the change does."""

from __future__ import annotations

from typing import Any

from .models import AuditEntry


def audit_record(*, action: str, actor: str, target: str, environment: str = "", **detail: Any) -> AuditEntry:
    return AuditEntry.objects.create(
        environment=environment, actor=actor, action=action, target=target[:200], detail=detail
    )
