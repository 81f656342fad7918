"""Compression dictionaries belong to one owner.

Earlier versions trained one dictionary per workflow type from every owner's blobs and kept it
at the shared ``dicts/<id>.zdict``. Each such row becomes one row per owner whose frames name
it, marked ``legacy``: that owner's old frames still decode, no other owner's frames resolve to
it, and it is never used for new writes (training makes per-owner ones, under ``o/<owner>/d/``).
A legacy dictionary no frame names is dropped (its object stays in the store).

Clients of earlier versions also stored dictionaries of their own at ``dicts/<id>.zdict``, with
no row. Every owner whose frames name a dictionary it has no row for gets a legacy row for it
too (size and samples unknown, recorded as 0; the workflow is that of a version holding such a
frame), so that owner's versions written then still decode on the service. Running it again
adds nothing.
"""

import statebag.models
from django.db import migrations, models


def split_per_owner(apps, schema_editor):
    Dictionary = apps.get_model("statebag", "CompressionDictionary")
    Blob = apps.get_model("statebag", "Blob")
    shared = list(Dictionary.objects.filter(owner_id=""))
    users = (
        Blob.objects.filter(dict_id__in=[row.dict_id for row in shared])
        .values_list("dict_id", "owner_id")
        .distinct()
    )
    owners: dict[str, set[str]] = {}
    for dict_id, owner_id in users:
        owners.setdefault(dict_id, set()).add(owner_id)
    for row in shared:
        for owner_id in sorted(owners.get(row.dict_id, ())):
            if Dictionary.objects.filter(owner_id=owner_id, dict_id=row.dict_id).exists():
                continue
            created = Dictionary.objects.create(
                owner_id=owner_id,
                workflow_id=row.workflow_id,
                dict_id=row.dict_id,
                size=row.size,
                samples=row.samples,
                sample_bytes=row.sample_bytes,
                active=False,
                legacy=True,
            )
            Dictionary.objects.filter(pk=created.pk).update(created_at=row.created_at)
        row.delete()
    add_frame_dictionaries(Dictionary, Blob)


def add_frame_dictionaries(Dictionary, Blob):
    """A legacy row for each (owner, dictionary) that the owner's frames name and no row records:
    the dictionaries earlier clients stored at ``dicts/`` themselves."""
    named = (
        Blob.objects.exclude(dict_id="")
        .values_list("owner_id", "dict_id")
        .order_by("owner_id", "dict_id")
        .distinct()
    )
    recorded = set(Dictionary.objects.exclude(owner_id="").values_list("owner_id", "dict_id"))
    for owner_id, dict_id in list(named):
        if not owner_id or (owner_id, dict_id) in recorded:
            continue
        workflows = (
            Blob.objects.filter(owner_id=owner_id, dict_id=dict_id, manifests__isnull=False)
            .values_list("manifests__execution__workflow_id", flat=True)
            .order_by("manifests__execution__workflow_id")
        )
        Dictionary.objects.create(
            owner_id=owner_id,
            workflow_id=workflows.first() or "",
            dict_id=dict_id,
            size=0,
            samples=0,
            sample_bytes=0,
            active=False,
            legacy=True,
        )
        recorded.add((owner_id, dict_id))


def merge_back(apps, schema_editor):
    """Before this migration a dictionary id was unique and one was active per workflow, and a
    client's own dictionary had no row."""
    Dictionary = apps.get_model("statebag", "CompressionDictionary")
    Dictionary.objects.filter(legacy=True, size=0, samples=0).delete()
    seen: set[str] = set()
    active: set[str] = set()
    for row in Dictionary.objects.order_by("-active", "-created_at", "pk"):
        if row.dict_id in seen:
            row.delete()
            continue
        seen.add(row.dict_id)
        if row.active and row.workflow_id in active:
            Dictionary.objects.filter(pk=row.pk).update(active=False)
        elif row.active:
            active.add(row.workflow_id)


class Migration(migrations.Migration):

    dependencies = [
        ('statebag', '0007_key_prefix_fits_every_environment'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='compressiondictionary',
            name='one_active_dictionary_per_workflow',
        ),
        migrations.AddField(
            model_name='compressiondictionary',
            name='legacy',
            field=models.BooleanField(default=False, help_text="Trained by an earlier version and kept in the shared dicts/ folder: read for this owner's frames written then, never used for new ones."),
        ),
        migrations.AddField(
            model_name='compressiondictionary',
            name='owner_id',
            field=models.CharField(default='', help_text='The tenant whose blobs trained it: the only one that uses or reads it.', max_length=128, validators=[statebag.models.validate_owner_id]),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name='compressiondictionary',
            name='active',
            field=models.BooleanField(default=True, help_text="New dehydrations of the owner's workflow use it."),
        ),
        migrations.AlterField(
            model_name='compressiondictionary',
            name='dict_id',
            field=models.CharField(max_length=64),
        ),
        migrations.RunPython(split_per_owner, merge_back),
        migrations.AddConstraint(
            model_name='compressiondictionary',
            constraint=models.UniqueConstraint(fields=('owner_id', 'dict_id'), name='dictionary_unique_per_owner'),
        ),
        migrations.AddConstraint(
            model_name='compressiondictionary',
            constraint=models.UniqueConstraint(condition=models.Q(('active', True)), fields=('owner_id', 'workflow_id'), name='one_active_dictionary_per_owner_workflow'),
        ),
        migrations.AddConstraint(
            model_name='compressiondictionary',
            constraint=models.CheckConstraint(condition=models.Q(('active', False), ('legacy', False), _connector='OR'), name='legacy_dictionary_never_active'),
        ),
    ]
