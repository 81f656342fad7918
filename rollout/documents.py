"""The flag-set document SDKs are served, its ETag, and its cache.

A document is one environment's revision: everything an SDK needs to evaluate every flag
locally. It is stored with the revision and published to the cache after commit, so the
SDK endpoint answers from the cache alone."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.cache import cache

from analemma_sdk.statebag.canonical import canonical_json, sha256_hex

from .models import Environment, FlagState, Revision

DOCUMENT_FORMAT = 1


def flag_document(state: FlagState) -> dict[str, Any]:
    flag = state.flag
    return {
        "kind": flag.kind,
        "default": flag.default_value,
        "enabled": state.enabled,
        "value": state.value,
        "percentage": float(Decimal(state.percentage)),
        "variants": state.variants,
        "targets": state.targets,
        "rules": state.rules,
        "bucket_by": state.bucket_by,
        "salt": state.salt,
        "seed": state.seed,
    }


def environment_flags(environment: Environment) -> dict[str, Any]:
    states = FlagState.objects.filter(environment=environment).select_related("flag").order_by("flag__key")
    return {state.flag.key: flag_document(state) for state in states}


def build_document(environment: Environment, number: int, flags: dict[str, Any]) -> dict[str, Any]:
    return {"format": DOCUMENT_FORMAT, "environment": environment.key, "revision": number, "flags": flags}


def document_body(document: dict[str, Any]) -> bytes:
    return canonical_json(document)


def document_etag(body: bytes) -> str:
    return f'"{sha256_hex(body)[:40]}"'  # strong: equal bytes, equal tag


def cache_key(environment_key: str) -> str:
    return f"rollout:flagset:v{DOCUMENT_FORMAT}:{environment_key}"


def publish(revision: Revision) -> None:
    """Put a revision in the cache, unless a newer one is there already."""
    key = cache_key(revision.environment.key)
    current = cache.get(key)
    if current is not None and current["revision"] > revision.number:
        return
    body = document_body(revision.document)
    cache.set(key, {"revision": revision.number, "etag": revision.etag, "body": body}, timeout=None)


def cached(environment_key: str) -> dict[str, Any] | None:
    entry: dict[str, Any] | None = cache.get(cache_key(environment_key))
    return entry


def publish_latest(environment_key: str) -> dict[str, Any] | None:
    revision = (
        Revision.objects.filter(environment__key=environment_key)
        .select_related("environment")
        .order_by("-number")
        .first()
    )
    if revision is None:
        return None
    publish(revision)
    return cached(environment_key)


CACHE_CONTROL = "private, no-cache"  # keep it, but revalidate (If-None-Match) every time


def conditional(entry: dict[str, Any], if_none_match: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body answering a cached entry, honouring If-None-Match. The Django
    view and the WSGI fast path both answer through this, so they cannot drift apart."""
    headers = [("ETag", entry["etag"]), ("Cache-Control", CACHE_CONTROL), ("Vary", "Authorization")]
    wanted = [tag.strip() for tag in if_none_match.split(",") if tag.strip()]
    if entry["etag"] in wanted or "*" in wanted:
        return 304, headers, b""
    body: bytes = entry["body"]
    return 200, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers], body
