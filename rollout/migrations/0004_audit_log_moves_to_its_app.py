"""The audit log moves to the audit app, shared with the statebag's keys: copy every entry
(the environment becomes its key), then drop the old table. SDK key use is now recorded by
the keys app's schedule, so the rollout one goes."""

import django.core.validators
from django.db import migrations, models


def key_field():
    """Environment and flag keys: the same rule, now ending at the end of the text."""
    return models.CharField(
        max_length=64,
        unique=True,
        validators=[
            django.core.validators.RegexValidator(
                "^[a-z0-9][a-z0-9_.-]{0,63}\\Z",
                "lowercase letters, digits, _ . - (start with a letter or digit, at most 64)",
            )
        ],
    )


def copy_entries(apps, schema_editor):
    old = apps.get_model("rollout", "AuditEntry")
    new = apps.get_model("audit", "AuditEntry")
    # Keep each entry's time: the historical model may switch auto_now_add off for this copy.
    new._meta.get_field("created_at").auto_now_add = False
    batch = []
    for entry in old.objects.select_related("environment").order_by("created_at", "pk").iterator():
        batch.append(
            new(
                environment=entry.environment.key if entry.environment else "",
                actor=entry.actor,
                action=entry.action,
                target=entry.target,
                detail=entry.detail,
                created_at=entry.created_at,
            )
        )
        if len(batch) >= 1000:
            new.objects.bulk_create(batch)
            batch = []
    new.objects.bulk_create(batch)


def copy_back(apps, schema_editor):
    old = apps.get_model("rollout", "AuditEntry")
    new = apps.get_model("audit", "AuditEntry")
    environments = {e.key: e for e in apps.get_model("rollout", "Environment").objects.all()}
    old._meta.get_field("created_at").auto_now_add = False
    old.objects.bulk_create(
        old(
            environment=environments.get(entry.environment),
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            detail=entry.detail,
            created_at=entry.created_at,
        )
        for entry in new.objects.order_by("created_at", "pk")
    )


def move_permission_grants(apps, schema_editor):
    """Who could see (or change) the old audit log may see the new one."""
    content_type = apps.get_model("contenttypes", "ContentType")
    permission = apps.get_model("auth", "Permission")
    old_type = content_type.objects.filter(app_label="rollout", model="auditentry").first()
    if old_type is None:
        return
    new_type, _ = content_type.objects.get_or_create(app_label="audit", model="auditentry")
    for old in permission.objects.filter(content_type=old_type):
        action = old.codename.split("_", 1)[0]
        new, _ = permission.objects.get_or_create(
            content_type=new_type, codename=old.codename, defaults={"name": f"Can {action} audit entry"}
        )
        for group in old.group_set.all():
            group.permissions.add(new)
        for user in old.user_set.all():
            user.user_permissions.add(new)


def drop_key_use_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(task="rollout.flush_sdk_key_use").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rollout", "0003_default_schedules"),
        ("audit", "0001_initial"),
        ("keys", "0001_default_schedules"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterField(model_name="environment", name="key", field=key_field()),
        migrations.AlterField(model_name="flag", name="key", field=key_field()),
        migrations.RunPython(copy_entries, copy_back),
        migrations.RunPython(move_permission_grants, migrations.RunPython.noop),
        migrations.DeleteModel(name="AuditEntry"),
        migrations.RunPython(drop_key_use_schedule, migrations.RunPython.noop),
    ]
