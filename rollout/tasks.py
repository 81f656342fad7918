"""Celery tasks of the rollout app: thin wrappers that take ids and call one service."""

from __future__ import annotations

from celery import shared_task

from .models import Revision
from .services.documents import document_publish, documents_repair
from .services.plans import plans_advance


@shared_task(name="rollout.publish_flagset")
def publish_flagset(revision_id: int) -> int | None:
    revision = Revision.objects.select_related("environment").filter(pk=revision_id).first()
    if revision is None:
        return None
    document_publish(revision=revision)
    return revision.number


@shared_task(name="rollout.repair_flag_sets")
def repair_flag_sets() -> list[str]:
    return documents_repair()


@shared_task(name="rollout.advance_plans")
def advance_plans() -> int:
    return plans_advance()
