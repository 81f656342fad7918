"""Default periodic tasks, created by the apps' data migrations (editable afterwards in admin)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# (task name, schedule name, every, period)
Schedule = tuple[str, str, int, str]


def create_interval_tasks(apps: Any, schedules: Sequence[Schedule]) -> None:
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    for task, name, every, period in schedules:
        interval, _ = interval_model.objects.get_or_create(every=every, period=period)
        task_model.objects.get_or_create(name=name, defaults={"task": task, "interval": interval})


def remove_interval_tasks(apps: Any, schedules: Sequence[Schedule]) -> None:
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    task_model.objects.filter(name__in=[name for _, name, _, _ in schedules]).delete()
