"""Compression dictionaries: one per owner and workflow type, trained from that owner's recent
blobs only, stored under that owner's prefix, and rolled in for that owner's dehydrations.

A dictionary holds pieces of the blobs it was trained on (secrets, card numbers...), so it is
as private as they are: no other owner's frames may use it, and a client may name in its frames
only a dictionary of its own owner (``dictionary_ids_check``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from analemma_sdk.statebag import ForeignDictionaryError, train_dictionary
from analemma_sdk.statebag.keys import dictionary_key, validate_id
from analemma_sdk.statebag.pointers import BlobRef
from core import metrics as service_metrics

from ..models import Blob, CompressionDictionary, Execution
from .hydrators import reset_service_hydrators, service_reader
from .stores import statebag_store

logger = logging.getLogger("statebag.dictionaries")

DICTIONARY_BYTES = 110 * 1024
MIN_SAMPLES = 100


def dictionary_train(
    *,
    owner_id: str,
    workflow_id: str,
    max_samples: int = 2000,
    size: int = DICTIONARY_BYTES,
    min_samples: int = MIN_SAMPLES,
) -> CompressionDictionary | None:
    """Train on up to ``max_samples`` recent distinct blobs of the owner's retained versions of
    the workflow; None when there are too few to be worth it."""
    validate_id("owner id", owner_id)
    validate_id("workflow id", workflow_id)
    rows = (
        Blob.objects.filter(
            owner_id=owner_id,
            manifests__execution__owner_id=owner_id,
            manifests__execution__workflow_id=workflow_id,
            manifests__retained=True,
        )
        .select_related("pack")
        .order_by("-created_at")
        .distinct()[: max_samples * 2]
    )
    refs: list[BlobRef] = []
    seen: set[str] = set()
    for row in rows:
        if row.digest not in seen and len(refs) < max_samples:
            seen.add(row.digest)
            refs.append(
                BlobRef(
                    row.digest,
                    row.pack.key,
                    row.offset,
                    row.length,
                    row.codec,
                    row.raw_size,
                    row.dict_id or None,
                )
            )
    if len(refs) < min_samples:
        return None
    store = statebag_store()
    samples = service_reader().read_blobs(refs)
    dictionary = train_dictionary(samples, size=size, owner_id=owner_id)
    key = dictionary_key(owner_id, dictionary.dict_id)
    if not store.exists(key):
        store.put(key, dictionary.data)
    with transaction.atomic():
        CompressionDictionary.objects.filter(owner_id=owner_id, workflow_id=workflow_id, active=True).update(
            active=False
        )
        trained, _ = CompressionDictionary.objects.update_or_create(
            owner_id=owner_id,
            dict_id=dictionary.dict_id,
            defaults={
                "workflow_id": workflow_id,
                "size": len(dictionary.data),
                "samples": len(samples),
                "sample_bytes": sum(len(s) for s in samples),
                "active": True,
                "legacy": False,
            },
        )
    reset_service_hydrators()
    return trained


def dictionaries_train_recent(
    *, days: int = 7, size: int = DICTIONARY_BYTES, min_samples: int = MIN_SAMPLES
) -> list[CompressionDictionary]:
    """One dictionary per (owner, workflow) with executions updated in the last ``days``.

    Each is trained on its own: one that fails (an unreadable blob, a store error) is logged
    and counted (``statebag_dictionary_training_failures_total``) and the others still train."""
    since = timezone.now() - timedelta(days=days)
    pairs = list(
        Execution.objects.filter(updated_at__gte=since)
        .values_list("owner_id", "workflow_id")
        .order_by("owner_id", "workflow_id")
        .distinct()
    )
    trained = []
    for owner, workflow in pairs:
        try:
            row = dictionary_train(owner_id=owner, workflow_id=workflow, size=size, min_samples=min_samples)
        except Exception:
            service_metrics.increment("statebag_dictionary_training_failures_total")
            logger.exception("training the dictionary of owner %s, workflow %s failed", owner, workflow)
            continue
        if row is not None:
            trained.append(row)
    return trained


def dictionary_ids_check(*, owner_id: str, dict_ids: Iterable[str]) -> None:
    """Refuse frames that name a dictionary the owner may not write with: one is usable only if
    it is the owner's own, trained here (not a legacy shared one) or published by the owner's
    client under the owner's prefix of the service store. Unknown, legacy and other owners'
    dictionaries get the same refusal, so the answer tells nothing about other owners."""
    wanted = set(dict_ids)
    if not wanted:
        return
    trained = set(
        CompressionDictionary.objects.filter(owner_id=owner_id, dict_id__in=wanted, legacy=False).values_list(
            "dict_id", flat=True
        )
    )
    store = statebag_store()
    for dict_id in sorted(wanted - trained):
        if not store.exists(dictionary_key(owner_id, dict_id)):
            raise ForeignDictionaryError(
                f"frames name compression dictionary {dict_id}, which is not one of owner {owner_id}'s"
            )
