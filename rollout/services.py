"""Every write of the rollout app: flags, their per-environment state, revisions, rollback,
kill switch, SDK keys — each recorded in the audit log and published after commit."""

from __future__ import annotations

import secrets
import time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from analemma.secret_keys import hash_key
from analemma_sdk.bucketing import TOTAL_WEIGHT

from . import documents
from .models import AuditEntry, Environment, Flag, FlagState, Revision, SdkKey

STATE_FIELDS = ("enabled", "value", "percentage", "variants", "targets", "rules", "bucket_by", "salt", "seed")
RULE_OPS = frozenset({"in", "not_in", "starts_with", "ends_with", "contains"})
KEY_PREFIX = "ask"
NEGATIVE_KEY_TTL = 30
# A revocation deletes the cached key after commit; the TTL bounds how long a lookup that
# raced the revocation can keep a revoked key alive.
POSITIVE_KEY_TTL = 300


class InvalidFlagDefinition(ValueError):
    """A flag's value, rollout, variants, targets or rules do not make sense."""


class UnknownRevision(LookupError):
    pass


# Validation ------------------------------------------------------------------------------
def _check_value(flag: Flag, value: Any, what: str) -> None:
    kind_ok = {
        Flag.Kind.BOOLEAN: lambda v: isinstance(v, bool),
        Flag.Kind.STRING: lambda v: isinstance(v, str),
        Flag.Kind.NUMBER: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        Flag.Kind.JSON: lambda v: True,
    }[Flag.Kind(flag.kind)]
    if not kind_ok(value):
        raise InvalidFlagDefinition(f"{what} of {flag.kind} flag {flag.key!r} cannot be {value!r}")


def _percentage(value: Any) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidFlagDefinition(f"percentage must be a number, got {value!r}") from None
    if not Decimal(0) <= number <= Decimal(100):
        raise InvalidFlagDefinition(f"percentage must be 0-100, got {value}")
    if number != number.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP):
        raise InvalidFlagDefinition(f"percentage takes at most two decimals, got {value}")
    return number


def _check_variants(flag: Flag, variants: Any) -> None:
    if not isinstance(variants, list) or not all(
        isinstance(v, dict) and set(v) == {"value", "weight"} for v in variants
    ):
        raise InvalidFlagDefinition('variants must be a list of {"value", "weight"}')
    if not variants:
        return
    weights = [v["weight"] for v in variants]
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in weights):
        raise InvalidFlagDefinition("variant weights must be non-negative integers")
    if sum(weights) != TOTAL_WEIGHT:
        raise InvalidFlagDefinition(f"variant weights must sum to {TOTAL_WEIGHT}, not {sum(weights)}")
    for variant in variants:
        _check_value(flag, variant["value"], "a variant")


def _check_targeting(flag: Flag, targets: Any, rules: Any) -> None:
    for target in targets or []:
        if not (isinstance(target, dict) and isinstance(target.get("units"), list) and "value" in target):
            raise InvalidFlagDefinition('targets must be [{"units": [...], "value": ...}]')
        _check_value(flag, target["value"], "a target's value")
    for rule in rules or []:
        if not (
            isinstance(rule, dict) and rule.get("op") in RULE_OPS and isinstance(rule.get("values"), list)
        ):
            raise InvalidFlagDefinition(
                f"a rule's op must be one of {', '.join(sorted(RULE_OPS))}, with a values list"
            )
        if not isinstance(rule.get("attribute"), str) or "value" not in rule:
            raise InvalidFlagDefinition("a rule needs an attribute and a value")
        _check_value(flag, rule["value"], "a rule's value")


def _check_state(flag: Flag, state: dict[str, Any]) -> None:
    if state.get("value") is not None:
        _check_value(flag, state["value"], "value")
    _check_variants(flag, state.get("variants") or [])
    _check_targeting(flag, state.get("targets"), state.get("rules"))
    seed = state.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise InvalidFlagDefinition("seed must be an integer")


# Audit and revisions ---------------------------------------------------------------------
def audit(
    *, action: str, actor: str, target: str, environment: Environment | None = None, **detail: Any
) -> None:
    AuditEntry.objects.create(
        environment=environment, actor=actor, action=action, target=target, detail=detail
    )


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
    environment: Environment, *, actor: str, reason: str = "", rolled_back_to: int | None = None
) -> Revision:
    """Snapshot the environment's flag states as its next revision; publish after commit."""
    environment = Environment.objects.select_for_update().get(pk=environment.pk)
    previous = environment.revisions.order_by("-number").first()
    number = previous.number + 1 if previous else 1
    flags = documents.environment_flags(environment)
    document = documents.build_document(environment, number, flags)
    revision = Revision.objects.create(
        environment=environment,
        number=number,
        document=document,
        etag=documents.document_etag(documents.document_body(document)),
        diff=_diff(previous.document["flags"] if previous else {}, flags),
        reason=reason,
        created_by=actor,
        rolled_back_to=rolled_back_to,
    )
    # Straight into the cache once committed: a cache write is cheap, and SDKs see the change
    # on their next poll. (rollout.publish_flagset republishes a revision from a worker.)
    transaction.on_commit(lambda: documents.publish(revision))
    return revision


# Flags -------------------------------------------------------------------------------------
def flag_create(
    *, key: str, kind: str, default_value: Any, actor: str, description: str = "", owner: str = ""
) -> Flag:
    with transaction.atomic():
        flag = Flag(key=key, kind=kind, default_value=default_value, description=description, owner=owner)
        flag.full_clean()
        _check_value(flag, default_value, "the default")
        flag.save()
        for environment in Environment.objects.all():
            FlagState.objects.create(flag=flag, environment=environment, enabled=False, value=default_value)
            revision_create(environment, actor=actor, reason=f"created flag {key}")
        audit(action="flag.create", actor=actor, target=key, kind=kind, default=default_value)
    return flag


def flag_state_update(
    *, flag: Flag, environment: Environment, actor: str, reason: str = "", **changes: Any
) -> Revision:
    """Change a flag's state in one environment; returns the new revision."""
    unknown = set(changes) - set(STATE_FIELDS)
    if unknown:
        raise InvalidFlagDefinition(f"unknown flag state fields: {', '.join(sorted(unknown))}")
    if "percentage" in changes:
        changes["percentage"] = _percentage(changes["percentage"])
    with transaction.atomic():
        state = FlagState.objects.select_for_update().get(flag=flag, environment=environment)
        before = documents.flag_document(state)
        for field, value in changes.items():
            setattr(state, field, value)
        _check_state(flag, {f: getattr(state, f) for f in STATE_FIELDS})
        state.full_clean(exclude=["flag", "environment"])
        state.save()
        revision = revision_create(environment, actor=actor, reason=reason)
        audit(
            action="flag.update",
            actor=actor,
            target=flag.key,
            environment=environment,
            revision=revision.number,
            reason=reason,
            before=before,
            after=documents.flag_document(state),
        )
    return revision


def flag_kill(*, flag: Flag, environment: Environment, actor: str, reason: str = "") -> Revision:
    revision = flag_state_update(
        flag=flag, environment=environment, actor=actor, reason=reason or "kill switch", enabled=False
    )
    audit(action="flag.kill", actor=actor, target=flag.key, environment=environment, revision=revision.number)
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
            environment, actor=actor, reason=reason or f"rollback to r{number}", rolled_back_to=number
        )
        audit(
            action="revision.rollback",
            actor=actor,
            target=f"{environment.key} r{number}",
            environment=environment,
            revision=revision.number,
            reason=reason,
        )
    return revision


# SDK keys ----------------------------------------------------------------------------------
def _key_cache(key_hash: str) -> str:
    return f"rollout:sdkkey:{key_hash}"


def sdk_key_create(*, environment: Environment, actor: str, name: str = "") -> tuple[SdkKey, str]:
    """Returns the key row and the key itself, which is never stored and cannot be shown again."""
    raw = f"{KEY_PREFIX}_{environment.key}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        key = SdkKey.objects.create(
            environment=environment,
            name=name,
            prefix=raw[: len(KEY_PREFIX) + len(environment.key) + 8],
            key_hash=hash_key(raw),
            created_by=actor,
        )
        audit(action="sdk_key.create", actor=actor, target=key.prefix, environment=environment, name=name)
    cache.delete(_key_cache(key.key_hash))  # forget a cached "no such key"
    return key, raw


def sdk_key_revoke(*, key: SdkKey, actor: str) -> None:
    with transaction.atomic():
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            audit(action="sdk_key.revoke", actor=actor, target=key.prefix, environment=key.environment)
    transaction.on_commit(lambda: cache.delete(_key_cache(key.key_hash)))


def bearer_key(authorization: str) -> str | None:
    """The key from an ``Authorization: Bearer <key>`` header, or None."""
    scheme, _, raw = authorization.partition(" ")
    raw = raw.strip()
    return raw if scheme.lower() == "bearer" and raw else None


def sdk_key_environment_cached(raw: str) -> str | None:
    """The environment of a key the cache already knows as valid; None otherwise (unknown,
    revoked, or simply not cached yet)."""
    return cache.get(_key_cache(hash_key(raw))) or None


def sdk_key_environment(raw: str) -> str | None:
    """The environment a presented key reads, or None. Answers from the cache when it can:
    the flag-set endpoint must not touch the database on its hot path."""
    key_hash = hash_key(raw)
    cached = cache.get(_key_cache(key_hash))
    if cached is not None:
        return cached or None
    key = (
        SdkKey.objects.filter(key_hash=key_hash, revoked_at__isnull=True)
        .select_related("environment")
        .first()
    )
    cache.set(
        _key_cache(key_hash),
        key.environment.key if key else "",
        POSITIVE_KEY_TTL if key else NEGATIVE_KEY_TTL,
    )
    return key.environment.key if key else None


_noted: dict[str, float] = {}
NOTE_USE_EVERY = 60.0


def sdk_key_note_use(raw: str) -> None:
    """Remember when a key was last used, in the cache, at most once a minute per process (the
    endpoint's hot path stays free of writes); a periodic task copies it to the database."""
    key_hash = hash_key(raw)
    now = time.monotonic()
    if now - _noted.get(key_hash, -NOTE_USE_EVERY) < NOTE_USE_EVERY:
        return
    _noted[key_hash] = now
    cache.set(f"rollout:sdkkey-used-hash:{key_hash}", timezone.now().isoformat(), None)


def sdk_keys_flush_last_used() -> int:
    updated = 0
    for key in SdkKey.objects.filter(revoked_at__isnull=True):
        seen = cache.get(f"rollout:sdkkey-used-hash:{key.key_hash}")
        if seen:
            SdkKey.objects.filter(pk=key.pk).update(last_used_at=seen)
            updated += 1
    return updated


# Defaults ----------------------------------------------------------------------------------
DEFAULT_ENVIRONMENTS = (("dev", "Development"), ("staging", "Staging"), ("prod", "Production"))
STATEBAG_FLAGS = (
    ("use_batching", Flag.Kind.BOOLEAN, False, "Pack changed fields by temperature group, with dedup."),
    ("use_zstd", Flag.Kind.BOOLEAN, False, "Compress frames with zstd instead of gzip."),
    ("zstd_level", Flag.Kind.NUMBER, 3, "zstd compression level (1-22)."),
    ("use_2pc", Flag.Kind.BOOLEAN, False, "Commit uploads and manifests with the two-phase commit."),
)


def defaults_ensure(actor: str = "system") -> None:
    """dev, staging and prod, and the state bag's own flags (off, level 3) in each. Idempotent."""
    with transaction.atomic():
        for key, name in DEFAULT_ENVIRONMENTS:
            environment, created = Environment.objects.get_or_create(key=key, defaults={"name": name})
            if created:
                audit(action="environment.create", actor=actor, target=key, environment=environment)
        for key, kind, default, description in STATEBAG_FLAGS:
            if not Flag.objects.filter(key=key).exists():
                flag_create(
                    key=key,
                    kind=kind,
                    default_value=default,
                    description=description,
                    actor=actor,
                    owner="statebag",
                )
        for environment in Environment.objects.all():
            missing = Flag.objects.exclude(states__environment=environment)
            for flag in missing:
                FlagState.objects.create(
                    flag=flag, environment=environment, enabled=False, value=flag.default_value
                )
            if missing.exists() or not environment.revisions.exists():
                revision_create(environment, actor=actor, reason="defaults")
