"""Default schedules for the background work, editable afterwards in admin (Periodic tasks)."""

from django.db import migrations

SCHEDULES = [
    # (task, name, every, period)
    ("statebag.reap_expired_transactions", "statebag: reap expired transactions", 1, "minutes"),
    ("statebag.gc_sweep", "statebag: garbage collection", 10, "minutes"),
    ("statebag.apply_retention", "statebag: retention", 1, "hours"),
    ("statebag.train_dictionaries", "statebag: train compression dictionaries", 1, "days"),
]


def create(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for task, name, every, period in SCHEDULES:
        interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=period)
        PeriodicTask.objects.get_or_create(name=name, defaults={"task": task, "interval": interval})


def remove(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for _, name, _, _ in SCHEDULES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("statebag", "0003_jobs_and_dictionaries"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
