"""Periodic telemetry work, editable afterwards in admin (Periodic tasks)."""

from django.db import migrations

from core.schedules import create_interval_tasks, remove_interval_tasks

SCHEDULES = [
    ("telemetry.aggregate", "telemetry: roll up per minute and apply retention", 1, "minutes"),
]


def create(apps, schema_editor):
    create_interval_tasks(apps, SCHEDULES)


def remove(apps, schema_editor):
    remove_interval_tasks(apps, SCHEDULES)


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
