"""Committing a dehydration: upload its objects and record the new version.

With a two-phase manifest store (and ``use_2pc``) the order is prepare -> upload -> commit,
so the service knows what is about to be uploaded and a collector never deletes it halfway;
otherwise upload -> record. Without a manifest store the objects are only uploaded.

Only after an upload does this process remember the new packs as stored.
"""

from __future__ import annotations

from . import metrics
from .cache import BlobCache
from .codec import ZstdDictionary
from .keys import dictionary_key
from .known import KnownDigests
from .manifests import ManifestDraft, PrepareRequest

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, TypeGuard

    from ..telemetry.hydration import HydratorTelemetry
    from .manifest_protocols import ManifestStore, TwoPhaseManifestStore
    from .manifests import ManifestRecord
    from .packing import Batch
    from .stores import BlobStore


class Committer:
    def __init__(
        self,
        store: BlobStore,
        cache: BlobCache,
        known: KnownDigests,
        *,
        manifest_store: ManifestStore | None,
        use_2pc: bool,
        cohort: Mapping[str, Any],
        dictionary: ZstdDictionary | None = None,
        telemetry: HydratorTelemetry | None = None,
    ) -> None:
        """``dictionary``: the one its owner's frames are compressed with, saved under that
        owner's prefix before the first upload that uses it, so that any reader can find it.
        That needs a store that takes direct writes: the service's store, read through the
        service, takes objects only as a prepare declares them, and a dictionary is not one."""
        if dictionary is not None and not getattr(store, "direct_writes", True):
            raise ValueError(
                f"compression dictionary {dictionary.dict_id} needs a store of its own to be "
                f"published in, and {store!r} is the service's store read through the service: "
                "set STATEBAG_STORE_URL (e.g. the service's bucket) or use no dictionary"
            )
        self.store = store
        self.cache = cache
        self.known = known
        self.manifest_store = manifest_store
        self.use_2pc = use_2pc
        self.cohort = cohort
        self._dictionary = dictionary
        self._dictionary_saved = False
        self._warned_no_2pc = False
        self.telemetry = telemetry  # counts commit outcomes: 2pc, record, failed

    def commit(
        self,
        ids: tuple[str, str, str],
        parents: tuple[str, ...],
        batch: Batch,
        entries: dict[str, Any],
        idempotency_key: str | None,
    ) -> ManifestRecord | None:
        """The recorded version; None when there is no manifest store."""
        if self.telemetry is None or self.manifest_store is None:
            return self._commit(ids, parents, batch, entries, idempotency_key)
        try:
            record = self._commit(ids, parents, batch, entries, idempotency_key)
        except Exception:
            self.telemetry.commit("failed")
            raise
        self.telemetry.commit("2pc" if self._two_phase(batch) else "record")
        return record

    def _two_phase(self, batch: Batch) -> bool:
        """Whether ``_commit`` takes (took) the prepare -> upload -> commit path for a batch."""
        return bool(batch.items) and self.use_2pc and supports_two_phase(self.manifest_store)

    def _commit(
        self,
        ids: tuple[str, str, str],
        parents: tuple[str, ...],
        batch: Batch,
        entries: dict[str, Any],
        idempotency_key: str | None,
    ) -> ManifestRecord | None:
        owner_id, workflow_id, execution_id = ids
        store = self.manifest_store
        if store is None:
            self.upload(batch, owner_id)
            return None
        if not batch.items and supports_two_phase(store):
            # Nothing to upload: a version that only points at stored blobs leaves nothing for
            # a collector to race between two phases, so one call records it (the service
            # checks those blobs live as it records). For most steps that is the whole commit.
            return store.record(
                ManifestDraft(
                    owner_id=owner_id,
                    workflow_id=workflow_id,
                    execution_id=execution_id,
                    parents=parents,
                    entries=entries,
                    packs=(),
                    cohort=self.cohort,
                    idempotency_key=idempotency_key,
                )
            )
        if self.use_2pc and supports_two_phase(store):
            # Before prepare: the service accepts frames naming a dictionary only once it is
            # stored under the owner's prefix.
            self._publish_dictionary(batch, owner_id)
            prepared = store.prepare(
                PrepareRequest(
                    owner_id=owner_id,
                    workflow_id=workflow_id,
                    execution_id=execution_id,
                    parents=parents,
                    packs=tuple(batch.writes),
                    reused=tuple(batch.reused),
                    idempotency_key=idempotency_key,
                    # A store read through the service takes no direct writes: ask for URLs.
                    upload=None if getattr(self.store, "direct_writes", True) else "presigned",
                )
            )
            if prepared.committed is not None:
                return prepared.committed  # a retry of a dehydration that already committed
            try:
                self.upload(batch, owner_id, prepared.uploads, store)
                return store.commit(prepared.txn_id, entries, self.cohort)
            except Exception:
                # Whatever failed after prepare (an upload refused or lost, a commit refused, the
                # service gone), the transaction is not left PREPARED until the reaper's turn.
                # An abort never undoes a commit that did go through.
                _abort_quietly(store, prepared.txn_id)
                raise
        if self.use_2pc:
            self._warn_no_2pc()
        self.upload(batch, owner_id)
        return store.record(
            ManifestDraft(
                owner_id=owner_id,
                workflow_id=workflow_id,
                execution_id=execution_id,
                parents=parents,
                entries=entries,
                packs=tuple(batch.writes),
                cohort=self.cohort,
                idempotency_key=idempotency_key,
            )
        )

    def upload(
        self,
        batch: Batch,
        owner_id: str,
        targets: Mapping[str, Mapping[str, Any]] | None = None,
        target_store: TwoPhaseManifestStore | None = None,
    ) -> None:
        """Upload every object, to its target when the manifest store handed one out (an upload
        URL), else to the store."""
        self._publish_dictionary(batch, owner_id)
        for write, data, blobs in batch.items:
            if targets and write.key in targets:
                # Only the store that handed out the targets gets here (HttpManifestStore), and
                # it uploads to them; upload() is not part of the two-phase protocol itself.
                target_store.upload(targets[write.key], data)  # type: ignore[union-attr]  # see above
            else:
                self.store.put(write.key, data)
            for blob in blobs:
                assert blob.ref is not None, "upload after packing"
                self.cache.put(blob.digest, blob.raw)
                if write.kind == "pack":
                    self.known.remember(owner_id, blob.ref)

    def _publish_dictionary(self, batch: Batch, owner_id: str) -> None:
        """Store the dictionary under its owner's prefix once a batch of that owner uses it."""
        dictionary = self._dictionary
        if dictionary is None or self._dictionary_saved or owner_id != dictionary.owner_id:
            return
        if not any(frame.dict_id == dictionary.dict_id for write in batch.writes for frame in write.frames):
            return
        key = dictionary_key(dictionary.owner_id, dictionary.dict_id)
        if not self.store.exists(key):
            self.store.put(key, dictionary.data)
        self._dictionary_saved = True

    def _warn_no_2pc(self) -> None:
        metrics.increment("statebag_2pc_unavailable_total")
        if not self._warned_no_2pc:
            self._warned_no_2pc = True
            metrics.logger().error(
                "use_2pc is on but %r cannot run a two-phase commit: committing in one step",
                self.manifest_store,
            )


def _abort_quietly(store: TwoPhaseManifestStore, txn_id: str) -> None:
    """Best effort: the reaper aborts an expired transaction anyway."""
    try:
        store.abort(txn_id)
    except Exception as exc:  # already failing; the reaper is the backstop
        metrics.logger().warning(
            "abort of transaction %s failed (%s): the reaper aborts it when it expires", txn_id, exc
        )


def supports_two_phase(store: object) -> TypeGuard[TwoPhaseManifestStore]:
    return all(callable(getattr(store, name, None)) for name in ("prepare", "commit", "abort"))
