"""Recording state versions as manifests.

StateVersioningService is the ORM-backed manifest store the hydrator calls after it wrote
its packs. With use_2pc=False (this module) it records the packs, blobs, manifest and
entries in one transaction and moves the execution's head with an optimistic check on the
expected parent. The two-phase path lives beside it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from analemma_sdk.statebag import (
    META_KEY,
    ManifestDraft,
    ManifestRecord,
    StateBag,
    StateHydrator,
    manifest_hash,
)
from analemma_sdk.statebag.pointers import BlobRef, ListRef, Literal, parse_pointer

from ..errors import DanglingPointerError, ManifestConflictError, TwoPhaseCommitUnavailableError
from ..models import Blob, Execution, Manifest, ManifestEntry, ManifestParent, Pack

logger = logging.getLogger("statebag.versioning")


class StateVersioningService:
    def __init__(self, *, use_2pc: bool | None = None) -> None:
        self.use_2pc = settings.STATEBAG["USE_2PC"] if use_2pc is None else use_2pc
        if self.use_2pc:
            # Never degrade silently: the caller asked for a guarantee this build lacks.
            logger.error("use_2pc was requested but the two-phase commit is not available")
            raise TwoPhaseCommitUnavailableError("use_2pc=True is not available in this build")

    def record(self, draft: ManifestDraft) -> ManifestRecord:
        try:
            with transaction.atomic():
                return self._record(draft)
        except IntegrityError as exc:
            # Two writers raced past the head check: the unique (execution, version) caught it.
            raise ManifestConflictError(f"concurrent commit on {draft.execution_id}: {exc}") from exc

    def _record(self, draft: ManifestDraft) -> ManifestRecord:
        execution, _ = Execution.objects.get_or_create(
            owner_id=draft.owner_id,
            execution_id=draft.execution_id,
            defaults={"workflow_id": draft.workflow_id},
        )
        execution = Execution.objects.select_for_update().select_related("head").get(pk=execution.pk)
        if draft.idempotency_key:
            done = execution.manifests.filter(idempotency_key=draft.idempotency_key).first()
            if done is not None:
                return ManifestRecord(done.hash, done.version)
        head = execution.head
        _check_parents(execution, head, draft.parents)
        parents = list(Manifest.objects.filter(hash__in=draft.parents, execution=execution))
        if len(parents) != len(set(draft.parents)):
            raise ManifestConflictError("a parent manifest is not a version of this execution")
        by_hash = {parent.hash: parent for parent in parents}

        _record_packs(draft)
        entries, referenced = _entries(draft)
        version = head.version + 1 if head else 1
        digest = manifest_hash(
            owner_id=draft.owner_id,
            workflow_id=draft.workflow_id,
            execution_id=draft.execution_id,
            version=version,
            parents=list(draft.parents),
            entries=draft.entries,
            cohort=draft.cohort,
        )
        manifest = Manifest.objects.create(
            execution=execution,
            version=version,
            hash=digest,
            cohort=dict(draft.cohort),
            idempotency_key=draft.idempotency_key or "",
            raw_bytes=sum(blob.raw_size for blob in referenced),
        )
        ManifestParent.objects.bulk_create(
            ManifestParent(child=manifest, parent=by_hash[h], position=i) for i, h in enumerate(draft.parents)
        )
        for entry in entries:
            entry.manifest = manifest
        ManifestEntry.objects.bulk_create(entries)
        manifest.blobs.set(referenced)
        execution.head = manifest
        execution.save(update_fields=["head", "updated_at"])
        return ManifestRecord(digest, version)


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


def _record_packs(draft: ManifestDraft) -> None:
    """Pack and blob rows for the objects the draft wrote."""
    for write in draft.packs:
        pack, _ = Pack.objects.get_or_create(
            key=write.key,
            defaults={
                "owner_id": draft.owner_id,
                "digest": write.digest,
                "size": write.size,
                "kind": write.kind,
            },
        )
        Blob.objects.bulk_create(
            [
                Blob(
                    pack=pack,
                    owner_id=draft.owner_id,
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


def _entries(draft: ManifestDraft) -> tuple[list[ManifestEntry], list[Blob]]:
    refs: list[BlobRef] = []
    entries = []
    for name, stored in draft.entries.items():
        pointer = parse_pointer(stored)
        if isinstance(pointer, BlobRef):
            refs.append(pointer)
            entries.append(
                ManifestEntry(field=name, kind=ManifestEntry.Kind.BLOB, digest=pointer.digest, stored=stored)
            )
        elif isinstance(pointer, ListRef):
            refs.extend(pointer.blob_refs())
            entries.append(ManifestEntry(field=name, kind=ManifestEntry.Kind.LIST, stored=stored))
        else:
            assert pointer is None or isinstance(pointer, Literal)
            entries.append(ManifestEntry(field=name, kind=ManifestEntry.Kind.INLINE, stored=stored))
    blobs = _resolve(draft.owner_id, refs)
    return entries, blobs


def _resolve(owner_id: str, refs: list[BlobRef]) -> list[Blob]:
    """Every pointer must name a frame the database knows, in a pack of the same owner."""
    if not refs:
        return []
    keys = {ref.key for ref in refs}
    rows = Blob.objects.filter(pack__key__in=keys, owner_id=owner_id).select_related("pack")
    index = {(b.pack.key, b.digest, b.offset, b.length): b for b in rows}
    found = []
    for ref in refs:
        blob = index.get((ref.key, ref.digest, ref.offset, ref.length))
        if blob is None:
            raise DanglingPointerError(f"no recorded frame {ref.digest[:12]} at {ref.key}@{ref.offset}")
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
