"""Periodic rollout work, editable afterwards in admin (Periodic tasks)."""

from django.db import migrations

from core.schedules import create_interval_tasks, remove_interval_tasks

SCHEDULES = [
    ("rollout.advance_plans", "rollout: advance rollout plans", 1, "minutes"),
    ("rollout.flush_sdk_key_use", "rollout: record SDK key use", 1, "minutes"),
]


def create(apps, schema_editor):
    create_interval_tasks(apps, SCHEDULES)


def remove(apps, schema_editor):
    remove_interval_tasks(apps, SCHEDULES)


class Migration(migrations.Migration):
    dependencies = [
        ("rollout", "0002_rollout_plans"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
