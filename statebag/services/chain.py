"""Reading and checking a manifest's hash chain.

Every read that hands a manifest's contents on (the manifest API, server-side hydration, a
replayed commit) goes through ``manifest_document``: it reads everything the hash covers once,
recomputes the hash from exactly what it read, and refuses the manifest with
ManifestIntegrityError — logged as a critical alert and counted — when they differ. What was
read is then returned, so nothing is served that was not checked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from analemma_sdk.statebag import manifest_hash
from analemma_sdk.statebag.errors import ManifestIntegrityError, StateBagError
from analemma_sdk.statebag.manifests import MANIFEST_FORMAT
from core import metrics as service_metrics

from ..models import Manifest

logger = logging.getLogger("statebag.integrity")


@dataclass(frozen=True)
class ChainLink:
    manifest: Manifest
    valid: bool


def manifest_fields(manifest: Manifest) -> dict[str, Any]:
    """Everything the manifest's hash covers, as stored, with the hash it claims: what a client
    needs to recompute it (``analemma_sdk.statebag.manifest_hash``). Not checked."""
    execution = manifest.execution
    links = manifest.parent_links.select_related("parent").order_by("position")
    return {
        "format": MANIFEST_FORMAT,
        "hash": manifest.hash,
        "owner_id": execution.owner_id,
        "workflow_id": execution.workflow_id,
        "execution_id": execution.execution_id,
        "version": manifest.version,
        "parents": [link.parent.hash for link in links],
        # In the order they were given (the rows' order), each value as stored: as sent.
        "entries": {
            field: stored for field, stored in manifest.entries.order_by("pk").values_list("field", "stored")
        },
        "cohort": manifest.cohort,
    }


def _recomputed(document: dict[str, Any]) -> str | None:
    try:
        return manifest_hash(
            owner_id=document["owner_id"],
            workflow_id=document["workflow_id"],
            execution_id=document["execution_id"],
            version=document["version"],
            parents=document["parents"],
            entries=document["entries"],
            cohort=document["cohort"],
        )
    except (StateBagError, TypeError, ValueError):  # a stored value that is not even JSON-able
        return None


def manifest_document(manifest: Manifest, *, purpose: str = "read") -> dict[str, Any]:
    """The manifest's fields (``manifest_fields``), verified against its hash. A mismatch is
    ManifestIntegrityError, logged at CRITICAL (the alert) and counted as
    ``statebag_integrity_errors_total``; the manifest's contents are not returned."""
    document = manifest_fields(manifest)
    expected = _recomputed(document)
    if expected != manifest.hash:
        service_metrics.increment("statebag_integrity_errors_total")
        logger.critical(
            "manifest %s (%s/%s v%d) fails its hash check on %s: recomputed %s; it is not served",
            manifest.hash,
            document["owner_id"],
            document["execution_id"],
            manifest.version,
            purpose,
            expected or "nothing (unreadable stored values)",
            extra={"manifest": manifest.hash, "owner_id": document["owner_id"]},
        )
        raise ManifestIntegrityError(
            f"manifest v{manifest.version} of {document['execution_id']} ({manifest.hash[:16]}) fails "
            "its hash check: its stored contents were changed after it was committed"
        )
    return document


def manifest_verify(manifest: Manifest) -> bool:
    """Recompute the manifest's hash from its stored entries and its parents' hashes."""
    return _recomputed(manifest_fields(manifest)) == manifest.hash


def manifest_chain(manifest: Manifest, limit: int = 50) -> list[ChainLink]:
    """The manifest and its first-parent ancestors, newest first, each checked."""
    links: list[ChainLink] = []
    current: Manifest | None = manifest
    while current is not None and len(links) < limit:
        links.append(ChainLink(current, manifest_verify(current)))
        first = current.parent_links.select_related("parent__execution").order_by("position").first()
        current = first.parent if first else None
    return links
