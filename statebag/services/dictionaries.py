"""Training a zstd dictionary per workflow type from its recent blobs, and rolling it in."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from analemma_sdk.statebag import StateHydrator, train_dictionary
from analemma_sdk.statebag.keys import dictionary_key
from analemma_sdk.statebag.pointers import BlobRef

from ..models import Blob, CompressionDictionary, Execution
from .hydrators import reset_service_hydrators
from .stores import statebag_store

DICTIONARY_BYTES = 110 * 1024
MIN_SAMPLES = 100


def dictionary_train(
    *, workflow_id: str, max_samples: int = 2000, size: int = DICTIONARY_BYTES, min_samples: int = MIN_SAMPLES
) -> CompressionDictionary | None:
    """Train on up to ``max_samples`` recent distinct blobs of the workflow's retained
    versions; None when there are too few to be worth it."""
    rows = (
        Blob.objects.filter(manifests__execution__workflow_id=workflow_id, manifests__retained=True)
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
    samples = StateHydrator(use_batching=True, store=store).read_blobs(refs)
    dictionary = train_dictionary(samples, size=size)
    key = dictionary_key(dictionary.dict_id)
    if not store.exists(key):
        store.put(key, dictionary.data)
    with transaction.atomic():
        CompressionDictionary.objects.filter(workflow_id=workflow_id, active=True).update(active=False)
        trained, _ = CompressionDictionary.objects.update_or_create(
            dict_id=dictionary.dict_id,
            defaults={
                "workflow_id": workflow_id,
                "size": len(dictionary.data),
                "samples": len(samples),
                "sample_bytes": sum(len(s) for s in samples),
                "active": True,
            },
        )
    reset_service_hydrators()
    return trained


def dictionaries_train_recent(*, days: int = 7) -> list[CompressionDictionary]:
    since = timezone.now() - timedelta(days=days)
    workflows = (
        Execution.objects.filter(updated_at__gte=since).values_list("workflow_id", flat=True).distinct()
    )
    trained = [dictionary_train(workflow_id=w) for w in workflows]
    return [row for row in trained if row is not None]
