"""The flag-set document SDKs are served, its ETag, and its cache.

A document is one environment's revision: everything an SDK needs to evaluate every flag
locally, in the shape ``analemma_sdk.flags.spec`` defines. It is stored with the revision and
published to the cache after commit, so the SDK endpoint answers from the cache alone."""

from __future__ import annotations

from typing import Any

from django.core.cache import cache

from analemma_sdk.flags.spec import DOCUMENT_FORMAT, flag_spec
from analemma_sdk.statebag.canonical import canonical_json, sha256_hex

from ..models import FlagState, Revision
from ..selectors import revision_latest_for_key

CACHE_CONTROL = "private, no-cache"  # keep it, but revalidate (If-None-Match) every time


def flag_document(state: FlagState) -> dict[str, Any]:
    flag = state.flag
    return flag_spec(
        flag.kind,
        flag.default_value,
        enabled=state.enabled,
        value=state.value,
        percentage=float(state.percentage),
        variants=state.variants,
        targets=state.targets,
        rules=state.rules,
        bucket_by=state.bucket_by,
        salt=state.salt,
        seed=state.seed,
    )


def document_body(document: dict[str, Any]) -> bytes:
    return canonical_json(document)


def document_etag(body: bytes) -> str:
    return f'"{sha256_hex(body)[:40]}"'  # strong: equal bytes, equal tag


def cache_key(environment_key: str) -> str:
    return f"rollout:flagset:v{DOCUMENT_FORMAT}:{environment_key}"


def document_publish(*, revision: Revision) -> None:
    """Put a revision in the cache, unless a newer one is there already."""
    key = cache_key(revision.environment.key)
    current = cache.get(key)
    if current is not None and current["revision"] > revision.number:
        return
    body = document_body(revision.document)
    cache.set(key, {"revision": revision.number, "etag": revision.etag, "body": body}, timeout=None)


def document_cached(*, environment_key: str) -> dict[str, Any] | None:
    entry: dict[str, Any] | None = cache.get(cache_key(environment_key))
    return entry


def document_publish_latest(*, environment_key: str) -> dict[str, Any] | None:
    revision = revision_latest_for_key(environment_key=environment_key)
    if revision is None:
        return None
    document_publish(revision=revision)
    return document_cached(environment_key=environment_key)


def conditional(entry: dict[str, Any], if_none_match: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body answering a cached entry, honouring If-None-Match. The Django
    view and the WSGI fast path both answer through this, so they cannot drift apart."""
    headers = [("ETag", entry["etag"]), ("Cache-Control", CACHE_CONTROL), ("Vary", "Authorization")]
    wanted = [tag.strip() for tag in if_none_match.split(",") if tag.strip()]
    if entry["etag"] in wanted or "*" in wanted:
        return 304, headers, b""
    body: bytes = entry["body"]
    return 200, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers], body
