"""Write keys: a Lambda's credential for statebag commits, scoped to one owner.

A key is random, shown once and stored as sha256; every request looks it up (the commit
path writes to the database anyway, so there is no cache to keep coherent on revocation)."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from analemma.secret_keys import hash_key
from analemma_sdk.statebag.keys import validate_id

from ..models import WriteKey

KEY_PREFIX = "awk"
LAST_USED_EVERY = timedelta(minutes=1)
logger = logging.getLogger("analemma.statebag.keys")


def write_key_create(*, owner_id: str, actor: str, name: str = "") -> tuple[WriteKey, str]:
    """The key row and the key itself, which is never stored and cannot be shown again."""
    validate_id("owner id", owner_id)
    raw = f"{KEY_PREFIX}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        key = WriteKey.objects.create(
            owner_id=owner_id, name=name, prefix=raw[:12], key_hash=hash_key(raw), created_by=actor
        )
        logger.info("write key %s created for owner %s by %s", key.prefix, owner_id, actor)
    return key, raw


def write_key_revoke(*, key: WriteKey, actor: str) -> None:
    with transaction.atomic():
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            logger.info("write key %s of owner %s revoked by %s", key.prefix, key.owner_id, actor)


def write_key_owner(raw: str) -> str | None:
    """The owner a presented key writes for, or None (unknown or revoked)."""
    key = WriteKey.objects.filter(key_hash=hash_key(raw), revoked_at__isnull=True).first()
    if key is None:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_EVERY:
        WriteKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key.owner_id
