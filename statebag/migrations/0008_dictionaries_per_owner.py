"""Compression dictionaries belong to one owner.

Earlier versions trained one dictionary per workflow type from every owner's blobs and kept it
at the shared ``dicts/<id>.zdict``. Each such row becomes one row per owner whose frames name
it, marked ``legacy``: that owner's old frames still decode, no other owner's frames resolve to
it, and it is never used for new writes (training makes per-owner ones, under ``o/<owner>/d/``).
A legacy dictionary no frame names is dropped (its object stays in the store).
"""

import statebag.models
from django.db import migrations, models


def split_per_owner(apps, schema_editor):
    Dictionary = apps.get_model("statebag", "CompressionDictionary")
    Blob = apps.get_model("statebag", "Blob")
    shared = list(Dictionary.objects.filter(owner_id=""))
    if not shared:
        return
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


def merge_back(apps, schema_editor):
    """Before this migration a dictionary id was unique and one was active per workflow."""
    Dictionary = apps.get_model("statebag", "CompressionDictionary")
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
