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
from collections.abc import Set as AbstractSet
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
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
from analemma_sdk.statebag.packs import FrameRef
from analemma_sdk.statebag.pointers import BlobRef, ListRef, Literal, parse_pointer

from ..conf import statebag_settings
from ..errors import DanglingPointerError, ManifestConflictError, StaleReferenceError, TransactionAbortedError
from ..faults import checkpoint
from ..models import Blob, CommitTransaction, Execution, Manifest, ManifestEntry, ManifestParent, Pack, Pin
from .chain import manifest_document
from .rows import db_value, insert_rows

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
        entries = EntryRows(draft.entries)  # before the transaction: nothing here needs its lock
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
                    entries=entries,
                    cohort=draft.cohort,
                    idempotency_key=draft.idempotency_key or "",
                    via="direct",
                )
                return ManifestRecord(manifest.hash, manifest.version)
        except IntegrityError as exc:
            raise ManifestConflictError(f"concurrent commit on {draft.execution_id}: {exc}") from exc

    # Two-phase ---------------------------------------------------------------------------
    def prepare(self, request: PrepareRequest) -> Prepared:
        reused = ReusedBlobs(request.owner_id, request.reused)  # a read: before the transaction
        with transaction.atomic():
            existing = None
            if request.idempotency_key:
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
            _pin_reused(txn, reused)
            _record_packs(request.packs, request.owner_id, Pack.State.PENDING, txn)
            checkpoint("prepare.pinned")
        return Prepared(txn_id=str(txn.id), expires_at=txn.expires_at.timestamp())

    def commit(self, txn_id: str, entries: Mapping[str, Any], cohort: Mapping[str, Any]) -> ManifestRecord:
        rows = EntryRows(entries)  # before the transaction: nothing here needs its lock
        rows.locate(txn_id)
        try:
            with transaction.atomic():
                record = self._commit(txn_id, rows, cohort)
        except DanglingPointerError:
            # Refused input changes nothing: the transaction stays prepared, for a corrected
            # commit (a client that gives up aborts it, else the reaper does once it expires).
            raise
        except (ManifestConflictError, IntegrityError) as exc:
            self.abort(txn_id, reason=str(exc))
            if isinstance(exc, IntegrityError):
                raise ManifestConflictError(f"concurrent commit: {exc}") from exc
            raise
        # The manifest references what the pins held, and GC heeds only prepared transactions'
        # pins: they go in a transaction of their own, which keeps the commit's short.
        Pin.objects.filter(transaction_id=uuid.UUID(txn_id)).delete()
        return record

    def _commit(self, txn_id: str, entries: EntryRows, cohort: Mapping[str, Any]) -> ManifestRecord:
        txn = _locked_transaction(txn_id)
        if txn.state == CommitTransaction.State.COMMITTED and txn.manifest is not None:
            return _replayed(txn.manifest)
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
    return _replayed(done)


def _replayed(manifest: Manifest) -> ManifestRecord:
    """An earlier commit, handed back to a retry: its entries go into the caller's payload, so
    they are checked against the manifest's hash first."""
    document = manifest_document(manifest, purpose="replayed commit")
    return ManifestRecord(manifest.hash, manifest.version, document["entries"])


class ReusedBlobs:
    """Where each blob a prepare reuses is stored, read before its transaction opens. A pack's
    frames are deleted only with the pack (by GC, under its row lock), so a pack that is still
    there and not being deleted once locked still holds the frames found here."""

    def __init__(self, owner_id: str, reused: Iterable[tuple[str, str]]) -> None:
        self.wanted = list(dict.fromkeys(reused))  # a blob named twice is pinned once
        self.packs: dict[str, int] = {}
        self.missing: tuple[str, ...] = ()
        if not self.wanted:
            return
        self.packs = dict(
            Pack.objects.filter(key__in={key for key, _ in self.wanted}, owner_id=owner_id)
            .exclude(state=Pack.State.DELETING)
            .values_list("key", "id")
        )
        # By (owner, digest), one index probe a digest: asking for pack ids and digests at once
        # let PostgreSQL probe every pair of the two lists.
        present = set(
            Blob.objects.filter(
                owner_id=owner_id, digest__in={digest for _, digest in self.wanted}
            ).values_list("pack_id", "digest")
        )
        self.missing = tuple(
            digest
            for key, digest in self.wanted
            if key not in self.packs or (self.packs[key], digest) not in present
        )


def _pin_reused(txn: CommitTransaction, reused: ReusedBlobs) -> None:
    if not reused.wanted:
        return
    # Row locks: a concurrent GC either finished deleting (no row, or DELETING) or waits for us.
    held = set(
        Pack.objects.select_for_update()
        .filter(pk__in=reused.packs.values())
        .exclude(state=Pack.State.DELETING)
        .values_list("id", flat=True)
    )
    missing = reused.missing or tuple(
        digest for key, digest in reused.wanted if reused.packs[key] not in held
    )
    if missing:
        raise StaleReferenceError(f"{len(missing)} reused blob(s) are no longer stored", missing)
    now, txn_id = db_value(Pin, "created_at", timezone.now()), db_value(Pin, "transaction", txn.pk)
    insert_rows(
        Pin,
        ("transaction", "pack", "digest", "created_at"),
        ((txn_id, reused.packs[key], digest, now) for key, digest in reused.wanted),
    )


def _record_packs(
    writes: Iterable[PackWrite], owner_id: str, state: str, txn: CommitTransaction | None
) -> None:
    """Pack and blob rows for uploaded (or about to be uploaded) objects, in a handful of
    statements however many there are (on SQLite the transaction holds the write lock).

    A row may already be there (a retry, the same content from another execution, a concurrent
    prepare of it): the insert leaves it, and it must then be exactly what is declared now, else
    ManifestConflictError. An insert is never dropped silently: a declared row that is missing
    afterwards is an error."""
    declared: dict[str, PackWrite] = {}
    for write in writes:
        if declared.setdefault(write.key, write) != write:
            raise ManifestConflictError(f"{write.key} is declared twice, differently")
    if not declared:
        return
    packs, new = _pack_rows(declared, owner_id, state, txn)
    if txn is not None:
        now, txn_id = db_value(Pin, "created_at", timezone.now()), db_value(Pin, "transaction", txn.pk)
        insert_rows(
            Pin,
            ("transaction", "pack", "digest", "created_at"),
            ((txn_id, pack_id, "", now) for pack_id in packs.values()),
        )
    frames = {(packs[w.key], f.digest): f for w in declared.values() for f in w.frames}
    fresh = {key: frame for key, frame in frames.items() if key[0] in new}
    _blob_rows(fresh, owner_id, checked=False)
    _blob_rows({key: frame for key, frame in frames.items() if key not in fresh}, owner_id, checked=True)


def _pack_rows(
    declared: dict[str, PackWrite], owner_id: str, state: str, txn: CommitTransaction | None
) -> tuple[dict[str, int], set[int]]:
    """The declared packs' ids, and the ones this call created. The others were there before:
    each is locked and must be what is declared."""
    now = db_value(Pack, "created_at", timezone.now())
    txn_id = db_value(Pack, "transaction", txn.pk if txn else None)
    created = insert_rows(
        Pack,
        ("key", "owner_id", "digest", "size", "kind", "state", "transaction", "created_at"),
        ((w.key, owner_id, w.digest, w.size, w.kind, state, txn_id, now) for w in declared.values()),
        unless_exists=("key",),  # an existing row is left as it is, and checked next
        returning=("id", "key"),
    )
    packs = {key: pk for pk, key in created or ()}
    new = set(packs.values())
    revived = []
    for pack in Pack.objects.select_for_update().filter(
        key__in=[key for key in declared if key not in packs]
    ):
        write = declared[pack.key]
        recorded = (pack.owner_id, pack.digest, pack.size, pack.kind)
        if recorded != (owner_id, write.digest, write.size, write.kind):
            raise ManifestConflictError(
                f"{pack.key} is already recorded as {pack.size} bytes with sha256 {pack.digest[:12]}"
            )
        packs[pack.key] = pack.pk
        # Same content being uploaded again: take it back from GC, or make it live.
        if pack.state == Pack.State.DELETING or (state == Pack.State.LIVE and pack.state != state):
            revived.append(pack.pk)
    unrecorded = declared.keys() - packs.keys()
    if unrecorded:
        raise IntegrityError(f"pack {min(unrecorded)} was not recorded")
    if revived:
        changes: dict[str, Any] = {"state": state, "gc_candidate_since": None}
        if txn is not None:
            changes["transaction"] = txn
        Pack.objects.filter(pk__in=revived).update(**changes)
    return packs, new


def _blob_rows(frames: dict[tuple[int, str], FrameRef], owner_id: str, *, checked: bool) -> None:
    """One row per (pack id, digest) frame. A pack created just now has no frames yet: its rows
    are inserted as they are. Frames of a pack recorded before may be there already (``checked``):
    those must match what is declared."""
    if not frames:
        return
    now = db_value(Blob, "created_at", timezone.now())
    inserted = insert_rows(
        Blob,
        ("pack", "owner_id", "digest", "offset", "length", "codec", "raw_size", "dict_id", "created_at"),
        (
            (pack_id, owner_id, f.digest, f.offset, f.length, f.codec, f.raw_size, f.dict_id or "", now)
            for (pack_id, _), f in frames.items()
        ),
        unless_exists=("pack", "digest") if checked else (),
        returning=("pack", "digest") if checked else (),
    )
    if not checked:
        return
    unseen = frames.keys() - set(inserted) if inserted is not None else frames.keys()
    if not unseen:
        return
    stored = {
        (row[0], row[1]): row[2:]
        for row in Blob.objects.filter(pack_id__in={pack_id for pack_id, _ in unseen}).values_list(
            "pack_id", "digest", "owner_id", "offset", "length", "codec", "raw_size", "dict_id"
        )
    }
    for pack_id, digest in unseen:
        f, row = frames[(pack_id, digest)], stored.get((pack_id, digest))
        if row is None:
            raise IntegrityError(f"frame {digest[:12]} of pack {pack_id} was not recorded")
        if row != (owner_id, f.offset, f.length, f.codec, f.raw_size, f.dict_id or ""):
            raise ManifestConflictError(f"frame {digest[:12]} of that pack is already recorded differently")


def _create_manifest(
    execution: Execution,
    *,
    parents: tuple[str, ...],
    entries: EntryRows,
    cohort: Mapping[str, Any],
    idempotency_key: str,
    via: str,
) -> Manifest:
    head = execution.head
    _check_parents(execution, head, parents)
    parent_rows = {m.hash: m for m in Manifest.objects.filter(hash__in=parents, execution=execution)}
    if len(parent_rows) != len(set(parents)):
        raise ManifestConflictError("a parent manifest is not a version of this execution")
    referenced = entries.referenced(execution.owner_id)
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
            entries=entries.entries,
            cohort=cohort,
        ),
        cohort=dict(cohort),
        idempotency_key=idempotency_key,
        raw_bytes=sum(referenced.values()),
        committed_via=via,
    )
    ManifestParent.objects.bulk_create(
        ManifestParent(child=manifest, parent=parent_rows[h], position=i) for i, h in enumerate(parents)
    )
    insert_rows(
        ManifestEntry,
        ("manifest", "field", "kind", "digest", "stored"),
        ((manifest.pk, *row) for row in entries.rows),
    )
    # A new manifest has no links yet: one plain insert (blobs.set() would read them first).
    insert_rows(Manifest.blobs.through, ("manifest", "blob"), ((manifest.pk, blob) for blob in referenced))
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


class EntryRows:
    """A commit's entries made ready for their rows before its transaction opens: parsing the
    pointers and encoding the values is work the database's write lock need not wait for."""

    def __init__(self, entries: Mapping[str, Any]) -> None:
        self.entries = entries
        self.refs: list[BlobRef] = []
        self.rows: list[tuple[str, str, str, Any]] = []  # field, kind, digest, stored value
        for name, stored in entries.items():
            pointer = parse_pointer(stored)
            kind, digest = ManifestEntry.Kind.INLINE, ""
            if isinstance(pointer, BlobRef):
                self.refs.append(pointer)
                kind, digest = ManifestEntry.Kind.BLOB, pointer.digest
            elif isinstance(pointer, ListRef):
                self.refs.extend(pointer.blob_refs())
                kind = ManifestEntry.Kind.LIST
            else:
                assert pointer is None or isinstance(pointer, Literal)
            self.rows.append((name, kind, digest, db_value(ManifestEntry, "stored", stored)))
        self.located: tuple[set[int], dict[int, int]] | None = None

    def locate(self, txn_id: str) -> None:
        """Before a commit's transaction: find the frames the pointers name, in the owner's live
        packs or in the ones the transaction uploaded (it makes them live). Frames change only
        with their pack, so under the transaction it is enough to see those packs live."""
        if not self.refs:
            return
        try:
            txn = CommitTransaction.objects.filter(pk=uuid.UUID(txn_id))
        except ValueError:
            return
        found = txn.values_list("owner_id", "upload_keys").first()
        if found is None:
            return
        try:
            self.located = _resolve(found[0], self.refs, uploaded=set(found[1]))
        except DanglingPointerError:
            return  # answered under the transaction, once a replayed commit had its chance

    def referenced(self, owner_id: str) -> dict[int, int]:
        """The raw size of each frame the pointers name, by blob id; DanglingPointerError if one
        is not in a live pack of the owner."""
        if self.located is not None:
            packs, frames = self.located
            live = Pack.objects.filter(pk__in=packs, owner_id=owner_id, state=Pack.State.LIVE)
            if live.count() == len(packs):
                return frames
        return _resolve(owner_id, self.refs)[1]


def _resolve(
    owner_id: str, refs: list[BlobRef], *, uploaded: AbstractSet[str] = frozenset()
) -> tuple[set[int], dict[int, int]]:
    """Every pointer must name a frame of a live pack of the same owner (or one of ``uploaded``,
    pending), and decode it as recorded (its codec, raw size and dictionary, the last checked
    to be the owner's own when the frame was declared): the packs' ids, and the raw size of
    each frame named, by blob id."""
    if not refs:
        return set(), {}
    # The packs first, then their frames by pack id (a frame's owner is its pack's): one join
    # filtering frames by owner let PostgreSQL scan the owner index once per pack.
    usable = Q(state=Pack.State.LIVE) | Q(state=Pack.State.PENDING, key__in=uploaded)
    packs = dict(
        Pack.objects.filter(usable, key__in={ref.key for ref in refs}, owner_id=owner_id).values_list(
            "id", "key"
        )
    )
    index = {
        (packs[pack_id], digest, offset, length): (blob_id, codec, raw_size, dict_id)
        for blob_id, pack_id, digest, offset, length, codec, raw_size, dict_id in Blob.objects.filter(
            pack_id__in=packs
        ).values_list("id", "pack_id", "digest", "offset", "length", "codec", "raw_size", "dict_id")
    }
    found: dict[int, int] = {}
    for ref in refs:
        blob = index.get((ref.key, ref.digest, ref.offset, ref.length))
        if blob is None:
            raise DanglingPointerError(f"no live frame {ref.digest[:12]} at {ref.key}@{ref.offset}")
        blob_id, codec, raw_size, dict_id = blob
        named = {"codec": ref.codec, "raw_size": ref.raw_size, "dict_id": ref.dict_id or ""}
        recorded = {"codec": codec, "raw_size": raw_size, "dict_id": dict_id}
        wrong = [name for name in named if named[name] != recorded[name]]
        if wrong:
            raise DanglingPointerError(
                f"the pointer to frame {ref.digest[:12]} at {ref.key}@{ref.offset} does not decode it "
                "as recorded: "
                + ", ".join(f"{name} {named[name]!r}, recorded {recorded[name]!r}" for name in wrong)
            )
        found[blob_id] = raw_size
    return set(packs), found


def manifest_state(manifest: Manifest, hydrator: StateHydrator) -> StateBag:
    """The state of one version, as a lazy bag read through ``hydrator``. The manifest is
    checked against its hash first: one that fails is ManifestIntegrityError, never a state."""
    document = manifest_document(manifest, purpose="hydration")
    stored: dict[str, Any] = dict(document["entries"])
    stored[META_KEY] = {
        "v": 1,
        "owner": document["owner_id"],
        "workflow": document["workflow_id"],
        "execution": document["execution_id"],
        "manifest": manifest.hash,
        "version": manifest.version,
    }
    return hydrator.hydrate(stored)
