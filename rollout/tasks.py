from __future__ import annotations

from celery import shared_task

from . import documents, services
from .models import Revision


@shared_task(name="rollout.publish_flagset")
def publish_flagset(revision_id: int) -> int | None:
    revision = Revision.objects.select_related("environment").filter(pk=revision_id).first()
    if revision is None:
        return None
    documents.publish(revision)
    return revision.number


@shared_task(name="rollout.flush_sdk_key_use")
def flush_sdk_key_use() -> int:
    return services.sdk_keys_flush_last_used()


@shared_task(name="rollout.advance_plans")
def advance_plans() -> int:
    from .plans import plans_advance

    return plans_advance()
