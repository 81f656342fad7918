"""Audit a store prefix for objects the database never heard of. The only code that lists
the store; not part of normal operation."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

from analemma_sdk.statebag import BlobStore
from analemma_sdk.statebag.keys import is_dictionary_key

from ..conf import statebag_settings
from ..models import GCRun, Pack
from .collection import SweepRun
from .envelopes import envelope_keys_recorded


@dataclass
class AuditReport:
    listed: int = 0
    unknown: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    too_young: list[str] = field(default_factory=list)
    run: GCRun | None = None


def store_audit(
    *,
    prefix: str = "o/",
    delete: bool = False,
    grace: timedelta | None = None,
    store: BlobStore | None = None,
) -> AuditReport:
    """List ``prefix``; objects with no Pack or envelope segment row are unknown. With ``delete``, unknown objects
    older than the grace period are deleted; an object whose age cannot be read is kept."""
    grace = grace if grace is not None else statebag_settings().gc_grace
    run = SweepRun(GCRun.Kind.AUDIT, store, dry_run=not delete)
    report = AuditReport()
    keys = list(run.store.list(prefix))
    report.listed = len(keys)
    known = set(Pack.objects.filter(key__in=keys).values_list("key", flat=True))
    known |= envelope_keys_recorded(keys)  # envelope segments have rows of their own
    cutoff = time.time() - grace.total_seconds()
    for key in keys:
        if key in known or is_dictionary_key(key):
            continue  # dictionaries have no pack row; frames may name them for as long as they exist
        report.unknown.append(key)
        modified = getattr(run.store.inner, "modified", lambda _key: None)(key)
        if modified is None or modified > cutoff:
            report.too_young.append(key)
        elif delete:
            run.store.delete(key)
            report.deleted.append(key)
    run.row.candidates = len(report.unknown)
    run.row.deleted_objects = len(report.deleted)
    report.run = run.finish(
        listed=report.listed, unknown=len(report.unknown), too_young=len(report.too_young)
    )
    return report
