"""Default schedules for the background work, editable afterwards in admin (Periodic tasks)."""

from django.db import migrations

from core.schedules import create_interval_tasks, remove_interval_tasks

SCHEDULES = [
    # (task, name, every, period)
    ("statebag.reap_expired_transactions", "statebag: reap expired transactions", 1, "minutes"),
    ("statebag.gc_sweep", "statebag: garbage collection", 10, "minutes"),
    ("statebag.apply_retention", "statebag: retention", 1, "hours"),
    ("statebag.train_dictionaries", "statebag: train compression dictionaries", 1, "days"),
]


def create(apps, schema_editor):
    create_interval_tasks(apps, SCHEDULES)


def remove(apps, schema_editor):
    remove_interval_tasks(apps, SCHEDULES)


class Migration(migrations.Migration):
    dependencies = [
        ("statebag", "0003_jobs_and_dictionaries"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
