"""Manifests as the engine sees them: a draft the hydrator hands to a manifest store, and the
hash chain both sides compute with the same function.

The store is abstract here: the service records drafts in its database, and a later HTTP
store lets a Lambda do the same through the service's API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeGuard

from .._record import Record, factory
from .canonical import canonical_json, sha256_hex
from .packs import FrameRef

MANIFEST_FORMAT = 1


class PackWrite(Record, frozen=True):
    """An object the dehydration wrote: a pack, or one legacy single-blob object."""

    key: str
    digest: str
    size: int
    frames: tuple[FrameRef, ...]
    kind: str = "pack"  # pack | object


class ManifestDraft(Record, frozen=True):
    owner_id: str
    workflow_id: str
    execution_id: str
    parents: tuple[str, ...]
    entries: Mapping[str, Any]  # field -> stored form: inline value or pointer JSON
    packs: tuple[PackWrite, ...]
    cohort: Mapping[str, Any] = factory(default_factory=dict)
    idempotency_key: str | None = None


class ManifestRecord(Record, frozen=True):
    hash: str
    version: int
    # Set when the store replays an earlier commit (same idempotency key): the entries that
    # were committed then, which the caller must hand on instead of its own.
    entries: Mapping[str, Any] | None = None


class ManifestStore(Protocol):
    def record(self, draft: ManifestDraft) -> ManifestRecord: ...


def manifest_hash(
    *,
    owner_id: str,
    workflow_id: str,
    execution_id: str,
    version: int,
    parents: Sequence[str],
    entries: Mapping[str, Any],
    cohort: Mapping[str, Any],
) -> str:
    """Hash of a manifest over its entries and its parents' hashes: editing any version of
    the history changes the hash of every version after it."""
    return sha256_hex(
        canonical_json(
            {
                "format": MANIFEST_FORMAT,
                "owner": owner_id,
                "workflow": workflow_id,
                "execution": execution_id,
                "version": version,
                "parents": list(parents),
                "entries": dict(entries),
                "cohort": dict(cohort),
            }
        )
    )


class PrepareRequest(Record, frozen=True):
    """Phase one: what a dehydration is about to upload and which stored blobs it reuses."""

    owner_id: str
    workflow_id: str
    execution_id: str
    parents: tuple[str, ...]
    packs: tuple[PackWrite, ...]
    reused: tuple[tuple[str, str], ...]  # (object key, digest) of blobs the new version keeps
    idempotency_key: str | None = None


class Prepared(Record, frozen=True):
    txn_id: str
    expires_at: float  # seconds since the epoch
    committed: ManifestRecord | None = None  # set when this idempotency key already committed
    # Where to upload each object instead of the caller's own store (object key -> target with
    # method, url and headers), when the manifest service hands out upload URLs.
    uploads: Mapping[str, Mapping[str, Any]] = factory(default_factory=dict)


class TwoPhaseManifestStore(ManifestStore, Protocol):
    def prepare(self, request: PrepareRequest) -> Prepared: ...
    def commit(
        self, txn_id: str, entries: Mapping[str, Any], cohort: Mapping[str, Any]
    ) -> ManifestRecord: ...
    def abort(self, txn_id: str) -> None: ...


def supports_two_phase(store: object) -> TypeGuard[TwoPhaseManifestStore]:
    return all(callable(getattr(store, name, None)) for name in ("prepare", "commit", "abort"))
