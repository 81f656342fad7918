"""The flag-set document SDKs are served, its ETag, and its cache.

A document is one environment's revision: everything an SDK needs to evaluate every flag
locally, in the shape ``analemma_sdk.flags.spec`` defines. It is built when the revision is
saved and published to the cache after commit, so the SDK endpoint answers from the cache.

Every server process must see a change committed by any process within a second:

* with a cache every process shares (Redis, ``settings.CACHE_SHARED``), the commit writes the
  new document there and the warm path never asks the database;
* with each process caching in its own memory (the embedded default, or no Redis), an entry
  is trusted for ``settings.CACHE_LOCAL_CHECK_SECONDS``; after that one indexed query asks
  the database for the environment's latest revision number, and only a newer number
  rebuilds the document."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError

from analemma_sdk.flags.spec import DOCUMENT_FORMAT, flag_spec
from analemma_sdk.statebag.canonical import canonical_json, sha256_hex

from ..models import Environment, FlagState, Revision
from ..selectors import revision_latest_for_key, revision_number_etag_latest

logger = logging.getLogger("analemma.rollout")
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
    """The canonical JSON of a document. Every flag in it passed check_flag, which refuses
    NaN and infinities, so orjson's sorted output is the canonical form without the scan for
    them (a tenth of a second at 10,000 flags)."""
    try:
        body: bytes = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return canonical_json(document)  # integers past 64 bits: the general path decides
    return body


def document_etag(body: bytes) -> str:
    return f'"{sha256_hex(body)[:40]}"'  # strong: equal bytes, equal tag


def cache_key(environment_key: str) -> str:
    return f"rollout:flagset:v{DOCUMENT_FORMAT}:{environment_key}"


def _entry(revision: Revision, body: bytes | None) -> dict[str, Any]:
    body = body if body is not None else document_body(revision.document)
    return {"revision": revision.number, "etag": revision.etag, "body": body, "checked": time.monotonic()}


def document_publish(*, revision: Revision, body: bytes | None = None) -> None:
    """Put a revision in the cache, unless a newer one is there already. ``body`` saves
    rebuilding a document the caller has just serialised. A shared cache that can do it
    decides atomically (Redis); process memory has no other writer to race with."""
    key = cache_key(revision.environment.key)
    set_if_newer = getattr(cache, "set_if_newer", None)
    if set_if_newer is not None:
        set_if_newer(key, _entry(revision, body), revision.number)
        return
    current = cache.get(key)
    if current is not None and current["revision"] > revision.number:
        return
    cache.set(key, _entry(revision, body), timeout=None)


def document_publish_committed(*, revision: Revision, body: bytes) -> None:
    """Publish after commit, never failing the caller: the change is committed already, and
    a missing or older entry is repaired from the database (the endpoint publishes the latest
    on a miss; rollout.publish_flagsets republishes every environment each minute)."""
    try:
        document_publish(revision=revision, body=body)
    except Exception:  # a cache outage must not turn a committed change into an error
        logger.exception("could not publish %s r%s to the cache", revision.environment.key, revision.number)
        try:
            cache.delete(cache_key(revision.environment.key))
        except Exception:  # the entry repairs itself from the database
            logger.exception("could not drop the cached flag set of %s", revision.environment.key)


def document_cached(*, environment_key: str) -> dict[str, Any] | None:
    """The cached entry of the environment's current revision (None when nothing is cached
    yet). Without a shared cache an entry older than CACHE_LOCAL_CHECK_SECONDS is checked
    against the database first."""
    entry: dict[str, Any] | None = cache.get(cache_key(environment_key))
    if entry is None or settings.CACHE_SHARED:
        return entry
    # When this process last confirmed the entry: a small key of its own, so a confirmation
    # does not write the whole document into the cache again.
    checked_key = cache_key(environment_key) + ":checked"
    checked = max(entry["checked"], cache.get(checked_key, 0.0))
    if time.monotonic() - checked < settings.CACHE_LOCAL_CHECK_SECONDS:
        return entry
    try:
        latest = revision_number_etag_latest(environment_key=environment_key)
    except DatabaseError as exc:
        # The database is away: keep serving what this process has, it was current a moment
        # ago (the shared-cache path would do the same), and ask again after the same pause.
        logger.warning("flag-set check against the database failed (%s): serving r%s", exc, entry["revision"])
        cache.set(checked_key, time.monotonic(), timeout=None)
        return entry
    if latest == (entry["revision"], entry["etag"]):
        cache.set(checked_key, time.monotonic(), timeout=None)
        return entry
    return document_publish_latest(environment_key=environment_key)


def document_publish_latest(*, environment_key: str) -> dict[str, Any] | None:
    """Cache the environment's latest revision from the database and return its entry. A
    shared cache keeps a newer entry another process published meanwhile; process memory
    takes the database's word (it may have gone back, as in a restore)."""
    revision = revision_latest_for_key(environment_key=environment_key)
    if revision is None:
        return None
    if settings.CACHE_SHARED:
        document_publish(revision=revision)
        return document_cached(environment_key=environment_key)
    entry = _entry(revision, None)
    cache.set(cache_key(environment_key), entry, timeout=None)
    return entry


def documents_repair() -> list[str]:
    """Publish the latest revision of every environment whose cached entry is missing or
    older; returns their keys. One indexed query per environment, a rebuild only when needed."""
    repaired = []
    for environment_key in Environment.objects.order_by("pk").values_list("key", flat=True):
        latest = revision_number_etag_latest(environment_key=environment_key)
        cached = cache.get(cache_key(environment_key))
        if latest is not None and (cached is None or (cached["revision"], cached["etag"]) != latest):
            document_publish_latest(environment_key=environment_key)
            repaired.append(environment_key)
    return repaired


def conditional(entry: dict[str, Any], if_none_match: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body answering a cached entry, honouring If-None-Match. The Django
    view and the WSGI fast path both answer through this, so they cannot drift apart."""
    headers = [("ETag", entry["etag"]), ("Cache-Control", CACHE_CONTROL), ("Vary", "Authorization")]
    wanted = [tag.strip() for tag in if_none_match.split(",") if tag.strip()]
    if entry["etag"] in wanted or "*" in wanted:
        return 304, headers, b""
    body: bytes = entry["body"]
    return 200, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers], body
