"""Every minute, any environment whose cached flag set is not its latest revision (a publish
lost to a cache outage, a revision written by a migration) is published again."""

from django.db import migrations

from core.schedules import create_interval_tasks, remove_interval_tasks

SCHEDULES = [("rollout.repair_flag_sets", "rollout: repair cached flag sets", 1, "minutes")]


def create(apps, schema_editor):
    create_interval_tasks(apps, SCHEDULES)


def remove(apps, schema_editor):
    remove_interval_tasks(apps, SCHEDULES)


class Migration(migrations.Migration):
    dependencies = [
        ("rollout", "0007_revisions_store_changed_flags"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
