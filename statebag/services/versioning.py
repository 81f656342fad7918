"""Recording state versions as manifests: the ORM-backed manifest store the hydrator calls.

Two ways in, one set of rules:

* ``record(draft)`` — one step, after the hydrator uploaded its packs (``use_2pc=False``).
* ``prepare(request)`` → upload → ``commit(txn_id, ...)`` — the two-phase commit: prepare
  records the transaction, the packs about to be uploaded (PENDING) and pins on the stored
  blobs it reuses, so neither the reaper nor GC can delete them meanwhile; commit marks the
  packs live, creates the manifest and moves the head. A PREPARED transaction that expires
  is aborted by the reaper, which deletes what only it uploaded.

Either way the head moves only with an optimistic check on the expected parent (a lost race
is a ManifestConflictError, never an overwrite), and a repeated idempotency key returns the
first version instead of creating a second one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from analemma_sdk.statebag import (
    META_KEY,
    ManifestDraft,
    ManifestRecord,
    StateBag,
    StateHydrator,
    manifest_hash,
)
from analemma_sdk.statebag import metrics as sdk_metrics
from analemma_sdk.statebag.manifests import PackWrite, Prepared, PrepareRequest
from analemma_sdk.statebag.pointers import BlobRef, ListRef, Literal, parse_pointer

from ..conf import statebag_settings
from ..errors import DanglingPointerError, ManifestConflictError, StaleReferenceError, TransactionAbortedError
from ..faults import checkpoint
from ..models import Blob, CommitTransaction, Execution, Manifest, ManifestEntry, ManifestParent, Pack, Pin

logger = logging.getLogger("statebag.versioning")


class StateVersioningService:
    def __init__(self, *, use_2pc: bool | None = None, transaction_ttl: timedelta | None = None) -> None:
        configured = statebag_settings()
        self.use_2pc = configured.use_2pc if use_2pc is None else use_2pc
        self.transaction_ttl = transaction_ttl or configured.transaction_ttl

    # One step -----------------------------------------------------------------------
    def record(self, draft: ManifestDraft) -> ManifestRecord:
        if self.use_2pc:
            # The caller skipped the two-phase path although it is required here: say so.
            sdk_metrics.increment("statebag_2pc_bypassed_total")
            logger.error(
                "manifest for %s recorded without two-phase commit while use_2pc is on", draft.execution_id
            )
        try:
            with transaction.atomic():
                execution = _lock_execution(draft.owner_id, draft.workflow_id, draft.execution_id)
                done = _committed_for_key(execution, draft.idempotency_key)
                if done is not None:
                    return done
                _record_packs(draft.packs, draft.owner_id, Pack.State.LIVE, None)
                manifest = _create_manifest(
                    execution,
                    parents=draft.parents,
                    entries=draft.entries,
                    cohort=draft.cohort,
                    idempotency_key=draft.idempotency_key or "",
                    via="direct",
                )
                return ManifestRecord(manifest.hash, manifest.version)
        except IntegrityError as exc:
            raise ManifestConflictError(f"concurrent commit on {draft.execution_id}: {exc}") from exc

    # Two-phase ---------------------------------------------------------------------------
    def prepare(self, request: PrepareRequest) -> Prepared:
        with transaction.atomic():
            existing = Execution.objects.filter(
                owner_id=request.owner_id, execution_id=request.execution_id
            ).first()
            if existing is not None:
                done = _committed_for_key(existing, request.idempotency_key)
                if done is not None:
                    return Prepared(txn_id="", expires_at=0.0, committed=done)
            txn = CommitTransaction.objects.create(
                owner_id=request.owner_id,
                workflow_id=request.workflow_id,
                execution_id=request.execution_id,
                parents=list(request.parents),
                upload_keys=[write.key for write in request.packs],
                idempotency_key=request.idempotency_key or "",
                expires_at=timezone.now() + self.transaction_ttl,
            )
            checkpoint("prepare.recorded")
            _pin_reused(txn, request.owner_id, request.reused)
            _record_packs(request.packs, request.owner_id, Pack.State.PENDING, txn)
            checkpoint("prepare.pinned")
        return Prepared(txn_id=str(txn.id), expires_at=txn.expires_at.timestamp())

    def commit(self, txn_id: str, entries: Mapping[str, Any], cohort: Mapping[str, Any]) -> ManifestRecord:
        try:
            with transaction.atomic():
                return self._commit(txn_id, entries, cohort)
        except (ManifestConflictError, DanglingPointerError, IntegrityError) as exc:
            self.abort(txn_id, reason=str(exc))
            if isinstance(exc, IntegrityError):
                raise ManifestConflictError(f"concurrent commit: {exc}") from exc
            raise

    def _commit(self, txn_id: str, entries: Mapping[str, Any], cohort: Mapping[str, Any]) -> ManifestRecord:
        txn = _locked_transaction(txn_id)
        if txn.state == CommitTransaction.State.COMMITTED and txn.manifest is not None:
            entries = {entry.field: entry.stored for entry in txn.manifest.entries.all()}
            return ManifestRecord(txn.manifest.hash, txn.manifest.version, entries)
        if txn.state != CommitTransaction.State.PREPARED:
            raise TransactionAbortedError(f"transaction {txn_id} was {txn.state}: {txn.reason}")
        checkpoint("commit.locked")
        execution = _lock_execution(txn.owner_id, txn.workflow_id, txn.execution_id)
        done = _committed_for_key(execution, txn.idempotency_key)
        if done is None:
            Pack.objects.filter(key__in=txn.upload_keys, owner_id=txn.owner_id).exclude(
                state=Pack.State.DELETING
            ).update(state=Pack.State.LIVE, gc_candidate_since=None)
            manifest = _create_manifest(
                execution,
                parents=tuple(txn.parents),
                entries=entries,
                cohort=cohort,
                idempotency_key=txn.idempotency_key,
                via="2pc",
            )
            done = ManifestRecord(manifest.hash, manifest.version)
        else:
            # Replayed after an earlier commit: this attempt's uploads are not referenced.
            manifest = Manifest.objects.get(hash=done.hash)
            Pack.objects.filter(
                key__in=txn.upload_keys, owner_id=txn.owner_id, gc_candidate_since__isnull=True
            ).update(gc_candidate_since=timezone.now())
        checkpoint("commit.manifest")
        txn.state = CommitTransaction.State.COMMITTED
        txn.manifest = manifest
        txn.finished_at = timezone.now()
        txn.save(update_fields=["state", "manifest", "finished_at"])
        txn.pins.all().delete()  # the manifest references what the pins held
        return done

    def abort(self, txn_id: str, reason: str = "aborted by the client") -> None:
        """Abort a prepared transaction; what only it uploaded becomes a GC candidate."""
        with transaction.atomic():
            try:
                txn = _locked_transaction(txn_id)
            except TransactionAbortedError:
                return
            transaction_abort(txn, reason)


def transaction_abort(txn: CommitTransaction, reason: str) -> None:
    """Mark a locked PREPARED transaction ABORTED, drop its pins, flag its uploads for GC."""
    if txn.state != CommitTransaction.State.PREPARED:
        return
    now = timezone.now()
    txn.state = CommitTransaction.State.ABORTED
    txn.reason = reason[:2000]
    txn.finished_at = now
    txn.save(update_fields=["state", "reason", "finished_at"])
    txn.pins.all().delete()
    Pack.objects.filter(
        key__in=txn.upload_keys, owner_id=txn.owner_id, gc_candidate_since__isnull=True
    ).update(gc_candidate_since=now)


# Helpers ------------------------------------------------------------------------------------
def _locked_transaction(txn_id: str) -> CommitTransaction:
    try:
        return (
            CommitTransaction.objects.select_for_update(of=("self",))
            .select_related("manifest")
            .get(pk=uuid.UUID(txn_id))
        )
    except (CommitTransaction.DoesNotExist, ValueError):
        raise TransactionAbortedError(f"no transaction {txn_id!r}") from None


def _lock_execution(owner_id: str, workflow_id: str, execution_id: str) -> Execution:
    execution, _ = Execution.objects.get_or_create(
        owner_id=owner_id, execution_id=execution_id, defaults={"workflow_id": workflow_id}
    )
    return Execution.objects.select_for_update(of=("self",)).select_related("head").get(pk=execution.pk)


def _committed_for_key(execution: Execution, key: str | None) -> ManifestRecord | None:
    if not key:
        return None
    done = execution.manifests.filter(idempotency_key=key).first()
    if done is None:
        return None
    entries = {entry.field: entry.stored for entry in done.entries.all()}
    return ManifestRecord(done.hash, done.version, entries)


def _pin_reused(txn: CommitTransaction, owner_id: str, reused: Iterable[tuple[str, str]]) -> None:
    wanted = list(reused)
    if not wanted:
        return
    keys = {key for key, _ in wanted}
    # Row locks: a concurrent GC either finished deleting (no row, or DELETING) or waits for us.
    packs = {
        p.key: p
        for p in Pack.objects.select_for_update()
        .filter(key__in=keys, owner_id=owner_id)
        .exclude(state=Pack.State.DELETING)
    }
    present = set(Blob.objects.filter(pack__in=packs.values()).values_list("pack__key", "digest"))
    missing = tuple(digest for key, digest in wanted if (key, digest) not in present)
    if missing:
        raise StaleReferenceError(f"{len(missing)} reused blob(s) are no longer stored", missing)
    Pin.objects.bulk_create(
        [Pin(transaction=txn, pack=packs[key], digest=digest) for key, digest in wanted],
        ignore_conflicts=True,
    )


def _record_packs(
    writes: Iterable[PackWrite], owner_id: str, state: str, txn: CommitTransaction | None
) -> None:
    """Pack and blob rows for uploaded (or about to be uploaded) objects."""
    for write in writes:
        pack = Pack.objects.select_for_update().filter(key=write.key).first()
        if pack is None:
            pack = Pack.objects.create(
                key=write.key,
                owner_id=owner_id,
                digest=write.digest,
                size=write.size,
                kind=write.kind,
                state=state,
                transaction=txn,
            )
        elif pack.state == Pack.State.DELETING or (state == Pack.State.LIVE and pack.state != state):
            # Same content being uploaded again: take it back from GC, or make it live.
            pack.state = state
            pack.transaction = txn or pack.transaction
            pack.gc_candidate_since = None
            pack.save(update_fields=["state", "transaction", "gc_candidate_since"])
        if txn is not None:
            Pin.objects.get_or_create(transaction=txn, pack=pack, digest="")
        Blob.objects.bulk_create(
            [
                Blob(
                    pack=pack,
                    owner_id=owner_id,
                    digest=f.digest,
                    offset=f.offset,
                    length=f.length,
                    codec=f.codec,
                    raw_size=f.raw_size,
                    dict_id=f.dict_id or "",
                )
                for f in write.frames
            ],
            ignore_conflicts=True,
        )


def _create_manifest(
    execution: Execution,
    *,
    parents: tuple[str, ...],
    entries: Mapping[str, Any],
    cohort: Mapping[str, Any],
    idempotency_key: str,
    via: str,
) -> Manifest:
    head = execution.head
    _check_parents(execution, head, parents)
    parent_rows = {m.hash: m for m in Manifest.objects.filter(hash__in=parents, execution=execution)}
    if len(parent_rows) != len(set(parents)):
        raise ManifestConflictError("a parent manifest is not a version of this execution")
    rows, referenced = _entries(execution.owner_id, entries)
    version = head.version + 1 if head else 1
    manifest = Manifest.objects.create(
        execution=execution,
        version=version,
        hash=manifest_hash(
            owner_id=execution.owner_id,
            workflow_id=execution.workflow_id,
            execution_id=execution.execution_id,
            version=version,
            parents=list(parents),
            entries=entries,
            cohort=cohort,
        ),
        cohort=dict(cohort),
        idempotency_key=idempotency_key,
        raw_bytes=sum(blob.raw_size for blob in referenced),
        committed_via=via,
    )
    ManifestParent.objects.bulk_create(
        ManifestParent(child=manifest, parent=parent_rows[h], position=i) for i, h in enumerate(parents)
    )
    for row in rows:
        row.manifest = manifest
    ManifestEntry.objects.bulk_create(rows)
    manifest.blobs.set(referenced)
    execution.head = manifest
    execution.save(update_fields=["head", "updated_at"])
    return manifest


def _check_parents(execution: Execution, head: Manifest | None, parents: tuple[str, ...]) -> None:
    if head is None:
        if parents:
            raise ManifestConflictError(f"{execution} has no version yet; the draft names a parent")
        return
    if head.hash not in parents:
        raise ManifestConflictError(
            f"{execution} is at v{head.version} ({head.hash[:12]}); the draft was based on "
            f"{', '.join(p[:12] for p in parents) or 'nothing'}"
        )


def _entries(owner_id: str, entries: Mapping[str, Any]) -> tuple[list[ManifestEntry], list[Blob]]:
    refs: list[BlobRef] = []
    rows = []
    for name, stored in entries.items():
        pointer = parse_pointer(stored)
        if isinstance(pointer, BlobRef):
            refs.append(pointer)
            rows.append(
                ManifestEntry(field=name, kind=ManifestEntry.Kind.BLOB, digest=pointer.digest, stored=stored)
            )
        elif isinstance(pointer, ListRef):
            refs.extend(pointer.blob_refs())
            rows.append(ManifestEntry(field=name, kind=ManifestEntry.Kind.LIST, stored=stored))
        else:
            assert pointer is None or isinstance(pointer, Literal)
            rows.append(ManifestEntry(field=name, kind=ManifestEntry.Kind.INLINE, stored=stored))
    return rows, _resolve(owner_id, refs)


def _resolve(owner_id: str, refs: list[BlobRef]) -> list[Blob]:
    """Every pointer must name a frame of a live pack of the same owner."""
    if not refs:
        return []
    keys = {ref.key for ref in refs}
    rows = Blob.objects.filter(
        pack__key__in=keys, owner_id=owner_id, pack__state=Pack.State.LIVE
    ).select_related("pack")
    index = {(b.pack.key, b.digest, b.offset, b.length): b for b in rows}
    found = []
    for ref in refs:
        blob = index.get((ref.key, ref.digest, ref.offset, ref.length))
        if blob is None:
            raise DanglingPointerError(f"no live frame {ref.digest[:12]} at {ref.key}@{ref.offset}")
        found.append(blob)
    return list({b.pk: b for b in found}.values())


def manifest_state(manifest: Manifest, hydrator: StateHydrator) -> StateBag:
    """The state of one version, as a lazy bag read through ``hydrator``."""
    stored: dict[str, Any] = {entry.field: entry.stored for entry in manifest.entries.all()}
    execution = manifest.execution
    stored[META_KEY] = {
        "v": 1,
        "owner": execution.owner_id,
        "workflow": execution.workflow_id,
        "execution": execution.execution_id,
        "manifest": manifest.hash,
        "version": manifest.version,
    }
    return hydrator.hydrate(stored)
