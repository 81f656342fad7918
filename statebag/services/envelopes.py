"""Envelope segments: each execution's committed versions, written to the store so that a reader
with only storage access can check and rebuild them (``analemma_sdk.statebag.envelopes``).

One object per execution per flush, not one per commit: most steps upload nothing (their state
rides in the payload), so a PUT per commit would be most of an execution's requests. An
execution is flushed once its last commit is ENVELOPE_QUIET_SECONDS old, once it finished, or
once ENVELOPE_MAX_VERSIONS versions wait; a 25-step execution costs one PUT.

A flush, safe to crash anywhere and to run twice at once:

1. the range: the unwritten segment a crashed flush left, else the versions after
   ``enveloped_version`` (at most ENVELOPE_MAX_VERSIONS, cut once the body reaches
   ENVELOPE_MAX_BYTES), passing over versions retention already released. Manifests are
   immutable, so they are read without a lock; every one is checked against its hash
   (``chain.manifest_document``) and one that fails stops the flush;
2. the record: under the execution's row lock, an EnvelopeSegment row for the range, before
   anything is uploaded, so every key that may exist is known without listing the store;
3. the upload: the segment is a pure function of the manifests, so writing a recorded range
   again writes the same bytes at the same key;
4. the confirmation: the segment is marked written and ``enveloped_version`` moves past it.

Retention flags the segments of the versions it releases (``envelope_segments_flag``); GC
deletes a flagged, written segment once none of its versions is retained
(``envelopes_collect``), from its row: no LIST.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Prefetch, Q, QuerySet
from django.utils import timezone

from analemma_sdk.statebag import BlobStore, CountingStore
from analemma_sdk.statebag.envelopes import EnvelopeBuilder
from analemma_sdk.statebag.keys import envelope_key

from ..conf import statebag_settings
from ..faults import checkpoint
from ..models import EnvelopeSegment, Execution, Manifest, ManifestEntry
from .chain import manifest_document
from .stores import statebag_store

logger = logging.getLogger("statebag.envelopes")


@dataclass(frozen=True)
class EnvelopeWrite:
    execution_id: str
    key: str
    first: int
    last: int
    size: int


@dataclass
class EnvelopeRun:
    """What one run of ``envelopes_write`` did, and the store requests it made."""

    written: list[EnvelopeWrite] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    store_requests: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "segments": len(self.written),
            "versions": sum(write.last - write.first + 1 for write in self.written),
            "bytes": sum(write.size for write in self.written),
            "failed": self.failed,
            "store_requests": self.store_requests,
        }


def envelopes_due(*, now: datetime, quiet: timedelta, max_versions: int) -> QuerySet[Execution]:
    """Executions with versions not yet in a segment that are ready to be flushed: quiet for
    ``quiet``, finished, or with ``max_versions`` versions waiting."""
    waiting = Execution.objects.filter(head__isnull=False, head__version__gt=F("enveloped_version"))
    return waiting.filter(
        Q(status=Execution.Status.FINISHED)
        | Q(head__created_at__lte=now - quiet)
        | Q(head__version__gte=F("enveloped_version") + max_versions)
    )


def envelopes_write(
    *,
    now: datetime | None = None,
    quiet: timedelta | None = None,
    store: BlobStore | None = None,
    batch: int | None = None,
) -> EnvelopeRun:
    """Flush the executions that are due, longest waiting first, until each is caught up or
    ``batch`` segments are written. One that fails (a manifest that fails its hash check, a
    store error) is logged and left for the next run; the others go on."""
    now = now or timezone.now()
    configured = statebag_settings()
    quiet = configured.envelope_quiet if quiet is None else quiet
    batch = configured.envelope_batch if batch is None else batch
    due = envelopes_due(now=now, quiet=quiet, max_versions=configured.envelope_max_versions)
    counting = CountingStore(store if store is not None else statebag_store())
    run = EnvelopeRun()
    for pk in list(due.order_by("head__created_at", "pk").values_list("pk", flat=True)[:batch]):
        while len(run.written) < batch:
            try:
                written = envelope_flush(pk, store=counting, now=now)
            except Exception:  # one execution's failure must not hold up the others
                logger.exception("envelope segment of execution %s not written", pk)
                run.failed.append(str(pk))
                break
            if written is None:
                break
            run.written.append(written)
            if not due.filter(pk=pk).exists():  # what is left waits for more versions or quiet
                break
    run.store_requests = dict(counting.counts)
    if run.written or run.failed:
        logger.info("envelope segments: %s", run.summary())
    return run


def envelope_flush(pk: int, *, store: BlobStore, now: datetime | None = None) -> EnvelopeWrite | None:
    """Write the next segment of one execution (see the module's docstring); None when there
    is nothing to write or a concurrent flush has it."""
    now = now or timezone.now()
    configured = statebag_settings()
    execution = Execution.objects.select_related("head").filter(pk=pk).first()
    if execution is None or execution.head is None:
        return None
    pending = _pending(execution)
    if pending is not None:
        builder = _build(execution, pending.first_version, pending.last_version, max_bytes=None)
        segment = pending
    else:
        first = _skip_released(execution, execution.head.version)
        if first is None:
            return None
        last = min(execution.head.version, first + configured.envelope_max_versions - 1)
        builder = _build(execution, first, last, max_bytes=configured.envelope_max_bytes)
        recorded = _record(execution, first, builder.versions[-1]["version"])
        if recorded is None:
            return None
        segment = recorded
    data = builder.encode()
    checkpoint("envelope.recorded")
    store.put(segment.key, data)
    checkpoint("envelope.written")
    _confirm(segment, size=len(data), now=now)
    return EnvelopeWrite(
        execution.execution_id, segment.key, segment.first_version, segment.last_version, len(data)
    )


def _pending(execution: Execution) -> EnvelopeSegment | None:
    """The segment a flush recorded and did not confirm (it may or may not be in the store)."""
    return execution.envelope_segments.filter(written_at__isnull=True).order_by("first_version").first()


def _skip_released(execution: Execution, head: int) -> int | None:
    """The first version to write: the first one after ``enveloped_version`` that retention has
    not released. Released versions before it are passed over (their packs may be gone, and GC
    would delete their segment anyway): ``enveloped_version`` moves past them. None when there
    is nothing left to write, or a concurrent flush moved first."""
    done = execution.enveloped_version
    retained = (
        Manifest.objects.filter(execution=execution, version__gt=done, version__lte=head, retained=True)
        .order_by("version")
        .values_list("version", flat=True)
        .first()
    )
    target = head if retained is None else retained - 1
    if target > done:
        with transaction.atomic():
            locked = Execution.objects.select_for_update(of=("self",)).get(pk=execution.pk)
            if locked.enveloped_version != done or _pending(locked) is not None:
                return None
            locked.enveloped_version = target
            locked.save(update_fields=["enveloped_version"])
        execution.enveloped_version = target
    return retained


def _build(execution: Execution, first: int, last: int, *, max_bytes: int | None) -> EnvelopeBuilder:
    """Versions ``first`` to ``last``, each checked against its hash; with ``max_bytes``, cut
    after the version that brings the body to that size (always at least one version)."""
    builder = EnvelopeBuilder(max_value_bytes=statebag_settings().max_blob_bytes)
    manifests = (
        Manifest.objects.filter(execution=execution, version__gte=first, version__lte=last)
        .select_related("execution")
        # In the order they were committed, which is the state's field order: the hash does not
        # depend on it, and a state rebuilt from the segment comes back with its fields in order.
        .prefetch_related(Prefetch("entries", queryset=ManifestEntry.objects.order_by("pk")))
        .order_by("version")
    )
    for manifest in manifests.iterator(chunk_size=64):
        if manifest.version != first + len(builder.versions):
            break  # a missing version; refused below
        builder.add(manifest_document(manifest, purpose="envelope"))
        if max_bytes is not None and builder.size >= max_bytes:
            break
    held = len(builder.versions)
    if held == 0 or (max_bytes is None and held != last - first + 1):
        raise Manifest.DoesNotExist(f"{execution} has no complete run of versions {first}-{last}")
    return builder


def _record(execution: Execution, first: int, last: int) -> EnvelopeSegment | None:
    """The row for a new segment, under the execution's lock; None when another flush got there
    first (it recorded a segment or moved ``enveloped_version``)."""
    try:
        with transaction.atomic():
            locked = Execution.objects.select_for_update(of=("self",)).get(pk=execution.pk)
            if locked.enveloped_version != first - 1 or _pending(locked) is not None:
                return None
            return EnvelopeSegment.objects.create(
                execution=locked,
                first_version=first,
                last_version=last,
                key=envelope_key(locked.owner_id, locked.execution_id, first, last),
            )
    except IntegrityError:  # the same range, recorded by a concurrent flush
        return None


def _confirm(segment: EnvelopeSegment, *, size: int, now: datetime) -> None:
    with transaction.atomic():
        execution = Execution.objects.select_for_update(of=("self",)).get(pk=segment.execution_id)
        row = EnvelopeSegment.objects.select_for_update().filter(pk=segment.pk).first()
        if row is not None and row.written_at is None:
            row.written_at = now
            row.size = size
            # Versions retention released before the row existed flagged nothing: flag it now.
            if _has_released(row) and row.gc_candidate_since is None:
                row.gc_candidate_since = now
            row.save(update_fields=["written_at", "size", "gc_candidate_since"])
        if execution.enveloped_version < segment.last_version:
            execution.enveloped_version = segment.last_version
            execution.save(update_fields=["enveloped_version"])


def _versions_of(segment: EnvelopeSegment) -> Any:
    return Manifest.objects.filter(
        execution_id=segment.execution_id,
        version__gte=segment.first_version,
        version__lte=segment.last_version,
    )


def _has_released(segment: EnvelopeSegment) -> bool:
    return bool(_versions_of(segment).filter(retained=False).exists())


# Retention and GC ---------------------------------------------------------------------------
def envelope_keys_recorded(keys: Iterable[str]) -> set[str]:
    """Those of ``keys`` that are recorded envelope segments (written or about to be): an audit
    of the store must not count them as unknown objects."""
    return set(EnvelopeSegment.objects.filter(key__in=list(keys)).values_list("key", flat=True))


def envelope_segments_flag(manifest: Manifest, *, now: datetime) -> None:
    """Retention released ``manifest``: the segment holding it becomes a GC candidate."""
    EnvelopeSegment.objects.filter(
        execution_id=manifest.execution_id,
        first_version__lte=manifest.version,
        last_version__gte=manifest.version,
        gc_candidate_since__isnull=True,
    ).update(gc_candidate_since=now)


def envelopes_collect(*, store: BlobStore, limit: int = 2000) -> tuple[int, int]:
    """Delete flagged, written segments none of whose versions is retained (a pinned version
    keeps its segment): the object, then its row. Returns (objects, bytes) deleted."""
    candidates = list(
        EnvelopeSegment.objects.filter(gc_candidate_since__isnull=False, written_at__isnull=False)
        .order_by("gc_candidate_since")
        .values_list("pk", flat=True)[:limit]
    )
    objects = size = 0
    for pk in candidates:
        with transaction.atomic():
            segment = EnvelopeSegment.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
            if segment is None:
                continue
            if _versions_of(segment).filter(retained=True).exists():
                segment.gc_candidate_since = None  # flagged for a version; others are kept
                segment.save(update_fields=["gc_candidate_since"])
                continue
            store.delete(segment.key)
            checkpoint("envelope.deleted")
            segment.delete()
            objects, size = objects + 1, size + segment.size
    return objects, size
