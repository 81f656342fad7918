"""Reaping, garbage collection and retention. Each is safe to run at any time, concurrently
with dehydrations and with itself, and each records a GCRun.

A pack is deleted in two steps, each under its row lock: first it is marked DELETING (only if
nothing retained references it, no prepared transaction pins it, and it is past the grace
period), then the object is deleted and the rows after it. A prepare that meets a DELETING
pack treats its blobs as gone (reuse) or takes it back (re-upload of the same bytes), so a
pointer never outlives its object. GC looks only at flagged candidates: no bucket LIST.
Envelope segments go the same way: retention flags the ones holding a version it releases,
GC deletes those none of whose versions is retained (services/envelopes.py).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from analemma_sdk.statebag import BlobStore, CountingStore

from ..conf import statebag_settings
from ..faults import checkpoint
from ..models import Blob, CommitTransaction, Execution, GCRun, Manifest, Pack, Pin
from .envelopes import envelope_segments_flag, envelopes_collect
from .stores import statebag_store
from .versioning import transaction_abort

# The reason the reaper records on a transaction it aborts (the dashboard counts reaps by it).
REAPED_REASON = "expired before commit"


class SweepRun:
    """Times a sweep, counts its store calls and writes the GCRun row at the end."""

    def __init__(self, kind: str, store: BlobStore | None, dry_run: bool = False) -> None:
        self.row = GCRun(kind=kind, dry_run=dry_run)
        self.store = CountingStore(store if store is not None else statebag_store())
        self.started = time.perf_counter()

    def finish(self, **detail: Any) -> GCRun:
        self.row.finished_at = timezone.now()
        self.row.duration_ms = int((time.perf_counter() - self.started) * 1000)
        self.row.store_lists = self.store.counts["lists"]
        self.row.detail = {**detail, "store_requests": dict(self.store.counts)}
        self.row.save()
        return self.row


def transactions_reap(
    *, now: datetime | None = None, store: BlobStore | None = None, limit: int = 500
) -> GCRun:
    """Abort PREPARED transactions past expires_at and delete what only they uploaded."""
    now = now or timezone.now()
    run = SweepRun(GCRun.Kind.REAP, store)
    expired = list(
        CommitTransaction.objects.filter(
            state=CommitTransaction.State.PREPARED, expires_at__lt=now
        ).values_list("pk", flat=True)[:limit]
    )
    aborted = 0
    for pk in expired:
        with transaction.atomic():
            txn = CommitTransaction.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
            if txn is not None and txn.state == CommitTransaction.State.PREPARED:
                transaction_abort(txn, REAPED_REASON)
                aborted += 1
    checkpoint("reap.aborted")
    # What the aborted transactions uploaded was never referenced: no grace needed.
    packs = Pack.objects.filter(state=Pack.State.PENDING, transaction__state=CommitTransaction.State.ABORTED)
    _collect_all(run, list(packs.values_list("pk", flat=True)[:limit]), now, grace=timedelta(0))
    return run.finish(aborted=aborted)


def gc_sweep(
    *,
    now: datetime | None = None,
    grace: timedelta | None = None,
    store: BlobStore | None = None,
    limit: int = 2000,
) -> GCRun:
    """Delete flagged packs that nothing retained or prepared references any more."""
    now = now or timezone.now()
    run = SweepRun(GCRun.Kind.GC, store)
    candidates = list(
        Pack.objects.filter(gc_candidate_since__isnull=False)
        .order_by("gc_candidate_since")
        .values_list("pk", flat=True)[:limit]
    )
    # A sweep that crashed between marking and deleting left DELETING rows: finish them.
    candidates += list(Pack.objects.filter(state=Pack.State.DELETING).values_list("pk", flat=True)[:limit])
    _collect_all(
        run,
        list(dict.fromkeys(candidates)),
        now,
        grace if grace is not None else statebag_settings().gc_grace,
    )
    # Envelope segments none of whose versions is retained any more, found from their rows.
    objects, size = envelopes_collect(store=run.store, limit=limit)
    run.row.deleted_objects += objects
    run.row.deleted_bytes += size
    return run.finish(envelopes_deleted=objects)


def _collect_all(run: SweepRun, pack_ids: list[int], now: datetime, grace: timedelta) -> None:
    run.row.candidates += len(pack_ids)
    for pk in pack_ids:
        deleted = pack_collect(pk, store=run.store, now=now, grace=grace)
        if deleted is not None:
            run.row.deleted_objects += 1
            run.row.deleted_bytes += deleted


def pack_collect(pk: int, *, store: BlobStore, now: datetime, grace: timedelta) -> int | None:
    """Delete one pack if it is garbage; returns its size when deleted, else None."""
    with transaction.atomic():
        pack = Pack.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
        if pack is None:
            return None
        if pack.state != Pack.State.DELETING:
            if not _is_garbage(pack, now, grace):
                return None
            pack.state = Pack.State.DELETING
            pack.save(update_fields=["state"])
    checkpoint("gc.marked")
    with transaction.atomic():
        pack = Pack.objects.select_for_update().filter(pk=pk, state=Pack.State.DELETING).first()
        if pack is None:
            return None  # taken back by a prepare that re-uploads the same bytes
        store.delete(pack.key)
        checkpoint("gc.object_deleted")
        Pin.objects.filter(pack=pack).delete()
        Blob.objects.filter(pack=pack).delete()
        pack.delete()
        return pack.size


def _is_garbage(pack: Pack, now: datetime, grace: timedelta) -> bool:
    if Pin.objects.filter(pack=pack, transaction__state=CommitTransaction.State.PREPARED).exists():
        return False
    if (
        pack.state == Pack.State.PENDING
        and pack.transaction is not None
        and pack.transaction.state == CommitTransaction.State.PREPARED
    ):
        return False
    if Blob.objects.filter(pack=pack, manifests__retained=True).exists():
        pack.gc_candidate_since = None  # referenced again: no longer a candidate
        pack.save(update_fields=["gc_candidate_since"])
        return False
    return pack.created_at <= now - grace


def manifest_release(manifest: Manifest, *, now: datetime | None = None) -> None:
    """Retention let this version go: its packs become GC candidates. The manifest row and its
    entries stay, so the hash chain can still be read and checked."""
    now = now or timezone.now()
    with transaction.atomic():
        manifest = Manifest.objects.select_for_update().get(pk=manifest.pk)
        if not manifest.retained:
            return
        pack_ids = list(
            Pack.objects.filter(blobs__manifests=manifest).values_list("pk", flat=True).distinct()
        )
        manifest.blobs.clear()
        manifest.retained = False
        manifest.released_at = now
        manifest.save(update_fields=["retained", "released_at"])
        Pack.objects.filter(pk__in=pack_ids, gc_candidate_since__isnull=True).update(gc_candidate_since=now)
        envelope_segments_flag(manifest, now=now)


def retention_apply(
    *,
    now: datetime | None = None,
    keep_last: int | None = None,
    finished_ttl: timedelta | None = None,
    limit: int = 5000,
) -> GCRun:
    """Running executions keep head + last K + pinned versions; finished ones keep all until
    their TTL, then release everything but pinned versions."""
    now = now or timezone.now()
    configured = statebag_settings()
    keep_last = configured.retain_last_versions if keep_last is None else keep_last
    finished_ttl = finished_ttl or configured.finished_ttl
    run = SweepRun(GCRun.Kind.RETENTION, None)
    retained = Manifest.objects.filter(retained=True, pinned=False)
    running_old = (
        retained.filter(execution__status=Execution.Status.RUNNING)
        .exclude(pk=F("execution__head_id"))
        .filter(version__lte=F("execution__head__version") - keep_last)
    )
    finished_expired = retained.filter(
        execution__status=Execution.Status.FINISHED, execution__finished_at__lt=now - finished_ttl
    )
    released = 0
    for queryset in (running_old, finished_expired):
        for manifest in queryset.order_by("pk")[:limit]:
            manifest_release(manifest, now=now)
            released += 1
    run.row.candidates = released
    return run.finish(released=released, keep_last=keep_last)


def execution_finish(*, owner_id: str, execution_id: str, now: datetime | None = None) -> Execution:
    with transaction.atomic():
        execution = Execution.objects.select_for_update().get(owner_id=owner_id, execution_id=execution_id)
        if execution.status != Execution.Status.FINISHED:
            execution.status = Execution.Status.FINISHED
            execution.finished_at = now or timezone.now()
            execution.save(update_fields=["status", "finished_at", "updated_at"])
        return execution
