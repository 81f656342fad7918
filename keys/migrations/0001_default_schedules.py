"""Copy keys' last use from the cache to the database every minute (editable in admin)."""

from django.db import migrations

from core.schedules import create_interval_tasks, remove_interval_tasks

SCHEDULES = [("keys.flush_key_use", "keys: record key use", 1, "minutes")]


def create(apps, schema_editor):
    create_interval_tasks(apps, SCHEDULES)


def remove(apps, schema_editor):
    remove_interval_tasks(apps, SCHEDULES)


class Migration(migrations.Migration):
    dependencies = [("django_celery_beat", "0019_alter_periodictasks_options")]

    operations = [migrations.RunPython(create, remove)]
