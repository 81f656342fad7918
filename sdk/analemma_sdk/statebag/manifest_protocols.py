"""What the engine needs from a manifest service: the one-call record, and the two-phase
commit when objects are uploaded. Kept apart from manifests.py because a Protocol needs
``typing`` at run time, which a cold start should not pay for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .manifests import ManifestDraft, ManifestRecord, Prepared, PrepareRequest


class ManifestStore(Protocol):
    def record(self, draft: ManifestDraft) -> ManifestRecord: ...


class TwoPhaseManifestStore(ManifestStore, Protocol):
    def prepare(self, request: PrepareRequest) -> Prepared: ...
    def commit(
        self, txn_id: str, entries: Mapping[str, Any], cohort: Mapping[str, Any]
    ) -> ManifestRecord: ...
    def abort(self, txn_id: str) -> None: ...
