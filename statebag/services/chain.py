"""Reading and checking a manifest's hash chain."""

from __future__ import annotations

from dataclasses import dataclass

from analemma_sdk.statebag import manifest_hash

from ..models import Manifest


@dataclass(frozen=True)
class ChainLink:
    manifest: Manifest
    valid: bool


def manifest_verify(manifest: Manifest) -> bool:
    """Recompute the manifest's hash from its stored entries and its parents' hashes."""
    execution = manifest.execution
    parents = [link.parent.hash for link in manifest.parent_links.select_related("parent")]
    expected = manifest_hash(
        owner_id=execution.owner_id,
        workflow_id=execution.workflow_id,
        execution_id=execution.execution_id,
        version=manifest.version,
        parents=parents,
        entries={entry.field: entry.stored for entry in manifest.entries.all()},
        cohort=manifest.cohort,
    )
    return expected == manifest.hash


def manifest_chain(manifest: Manifest, limit: int = 50) -> list[ChainLink]:
    """The manifest and its first-parent ancestors, newest first, each checked."""
    links: list[ChainLink] = []
    current: Manifest | None = manifest
    while current is not None and len(links) < limit:
        links.append(ChainLink(current, manifest_verify(current)))
        first = current.parent_links.select_related("parent__execution").order_by("position").first()
        current = first.parent if first else None
    return links
