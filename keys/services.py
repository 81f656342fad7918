"""Creating, revoking and resolving keys of every kind, one way for all.

* A key is created from an unsaved row that carries its scope (``SdkKey(environment=...)``,
  ``WriteKey(owner_id=...)``); the key itself is returned once and never stored.
* Creation and revocation write one audit entry each, ``<kind>.create`` / ``<kind>.revoke``.
* Resolving a presented key to its scope goes through the cache: a valid key for
  ``settings.KEY_CACHE_SECONDS``, an unknown one for at most 30 s. After a revocation commits,
  the cached entry becomes a refusal for as long as a valid entry could live, and a lookup only
  ever *adds* an entry, so one that read the key just before the revocation cannot put it
  back. With a cache every process shares (Redis) that reaches every process at once and the
  hot path makes no database query; each process also keeps what it read there for
  ``KEY_MEMO_SECONDS`` (0.25 s), so a busy worker asks Redis a few times a second rather than
  once a request, and a revocation still reaches it within that. With process memory the
  setting is 0.5 s (``CACHE_LOCAL_CHECK_SECONDS``), so a revocation made by another process is
  seen within a second. A cache that fails is bypassed: the database answers instead.
* Last use: with a shared cache it is noted there at most once a minute per process and copied
  to the database by a periodic task, so authenticating never writes to the database; with
  process memory (no task could read it) it is written at most once a minute per process.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from audit.services import audit_record

from .models import SecretKey
from .tokens import hash_key, new_secret

logger = logging.getLogger("analemma.keys")
NEGATIVE_CACHE_SECONDS = 30
NOTE_USE_EVERY = 60.0
# With a shared cache: how long this process trusts what it read there.
KEY_MEMO_SECONDS = 0.25
_noted: dict[str, float] = {}
# (cache key) -> (when read, scope or "" for a refusal): what this process read from a shared cache.
_memo: dict[str, tuple[float, str]] = {}
# Bumped by every revocation this process commits: a lookup that started before one does not
# keep what it read.
_revocations = [0]


def _lookup_key(kind: str, key_hash: str) -> str:
    return f"keys:{kind}:{key_hash}"


def _used_key(kind: str, key_hash: str) -> str:
    return f"keys:{kind}:used:{key_hash}"


def _cached(key: str) -> Any:
    try:
        return cache.get(key)
    except Exception as exc:  # a cache outage must not lock every client out
        logger.warning("key cache unavailable (%s): asking the database", exc)
        return None


def _cache(operation: str, *args: Any) -> None:
    """``cache.<operation>(*args)``, or nothing when the cache is down."""
    try:
        getattr(cache, operation)(*args)
    except Exception as exc:  # the database stays the truth; the cache only saves queries
        logger.warning("key cache unavailable (%s): not caching", exc)


def _audit(key: SecretKey, verb: str, actor: str, **detail: str) -> None:
    """One entry per change, named by the key (its prefix, never its secret)."""
    audit_record(
        action=f"{key.kind}.{verb}",
        actor=actor,
        target=key.prefix,
        environment=key.audit_environment(),
        scope=key.scope(),
        **detail,
    )


@sensitive_variables("raw")
def key_create(*, key: SecretKey, actor: str) -> str:
    """Save ``key`` (an unsaved row with its scope set) with a fresh secret; returns the key
    text, which cannot be shown again. An invalid scope raises ValidationError."""
    raw = key.compose(new_secret())
    key.prefix = key.prefix_of(raw)
    key.key_hash = hash_key(raw)
    key.created_by = actor
    key.full_clean()
    with transaction.atomic():
        key.save()
        _audit(key, "create", actor, name=key.name)
    # Forget a cached "no such key" from before it existed.
    transaction.on_commit(lambda: _cache("delete", _lookup_key(key.kind, key.key_hash)))
    return raw


def key_revoke(*, key: SecretKey, actor: str) -> bool:
    """Revoke ``key``; False when it already was."""
    with transaction.atomic():
        locked = type(key)._default_manager.select_for_update().get(pk=key.pk)
        if locked.revoked_at is not None:
            return False
        locked.revoked_at = key.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        _audit(key, "revoke", actor)
    refusal = (_lookup_key(key.kind, key.key_hash), "", settings.KEY_CACHE_SECONDS)

    def refuse() -> None:
        _revocations[0] += 1
        _memo.pop(refusal[0], None)
        _cache("set", *refusal)

    transaction.on_commit(refuse)
    return True


def key_find(*, model: type[SecretKey], text: str) -> SecretKey:
    """The one active key ``text`` names: the key itself, or its prefix as shown (with or
    without the trailing "…"). LookupError, saying why, when none or several match."""
    text = text.strip().removesuffix("…")
    active = model._default_manager.filter(revoked_at__isnull=True)
    by_hash = active.filter(key_hash=hash_key(text)).first() if text else None
    if by_hash is not None:
        return by_hash
    matches = list(active.filter(prefix=text)[:2]) if text else []
    if len(matches) != 1:
        what = "no active key has" if not matches else "several active keys have"
        raise LookupError(f"{what} prefix {text!r}: give the prefix the key list shows, or the key")
    return matches[0]


def _scope_in_database(model: type[SecretKey], key_hash: str) -> str | None:
    scope: str | None = (
        model._default_manager.filter(key_hash=key_hash, revoked_at__isnull=True)
        .values_list(model.scope_field, flat=True)
        .first()
    )
    return scope


def key_scope(*, model: type[SecretKey], raw: str) -> str | None:
    """The scope a presented key grants (environment key, owner id), or None for a key that
    is unknown or revoked."""
    key_hash = hash_key(raw)
    lookup = _lookup_key(model.kind, key_hash)
    memo = settings.CACHE_SHARED and KEY_MEMO_SECONDS > 0
    now, revocations = time.monotonic(), _revocations[0]
    if memo:
        seen = _memo.get(lookup)
        if seen is not None and now - seen[0] < KEY_MEMO_SECONDS:
            return seen[1] or None
    cached = _cached(lookup)
    if cached is not None:
        scope: str | None = cached or None
    else:
        scope = _scope_in_database(model, key_hash)
        ttl = settings.KEY_CACHE_SECONDS
        _cache("add", lookup, scope or "", ttl if scope else min(ttl, NEGATIVE_CACHE_SECONDS))
    if memo and revocations == _revocations[0]:
        if len(_memo) > 10_000:
            _memo.clear()
        _memo[lookup] = (now, scope or "")
    return scope


def key_scope_cached(*, model: type[SecretKey], raw: str) -> str | None:
    """The scope of a key the cache already knows as valid; None otherwise (unknown,
    revoked, or simply not cached yet). Never touches the database."""
    return _cached(_lookup_key(model.kind, hash_key(raw))) or None


def key_note_use(*, model: type[SecretKey], raw: str) -> None:
    """Remember that a key was used now, at most once a minute per process."""
    key_hash = hash_key(raw)
    now = time.monotonic()
    if now - _noted.get(key_hash, -NOTE_USE_EVERY) < NOTE_USE_EVERY:
        return
    _noted[key_hash] = now
    if settings.CACHE_SHARED:
        _cache("set", _used_key(model.kind, key_hash), timezone.now().isoformat(), None)
    else:
        model._default_manager.filter(key_hash=key_hash).update(last_used_at=timezone.now())


def key_models() -> list[type[SecretKey]]:
    return [model for model in apps.get_models() if issubclass(model, SecretKey)]


def keys_flush_last_used() -> int:
    """Copy the last uses noted in the cache to the database; returns how many keys moved."""
    updated = 0
    for model in key_models():
        for key in model._default_manager.filter(revoked_at__isnull=True).only("pk", "key_hash"):
            seen = _cached(_used_key(model.kind, key.key_hash))
            if seen:
                model._default_manager.filter(pk=key.pk).update(last_used_at=seen)
                updated += 1
    return updated
