"""Envelope segments: each execution's committed versions are also written to the store, a few
at a time, so a reader with only storage access can check and rebuild them.

``Execution.enveloped_version`` says how far that has gone; ``EnvelopeSegment`` records each
object (before its upload, so its key is known without listing the store); the
``statebag.write_envelopes`` task writes them every minute (editable in admin). Executions
from before start at 0: their versions are written by the first runs, a batch at a time.
"""

import django.db.models.deletion
from django.db import migrations, models

from core.schedules import create_interval_tasks, remove_interval_tasks

SCHEDULES = [("statebag.write_envelopes", "statebag: write envelope segments", 1, "minutes")]


def create(apps, schema_editor):
    create_interval_tasks(apps, SCHEDULES)


def remove(apps, schema_editor):
    remove_interval_tasks(apps, SCHEDULES)


class Migration(migrations.Migration):
    dependencies = [
        ("statebag", "0009_entries_as_text"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.AddField(
            model_name="execution",
            name="enveloped_version",
            field=models.PositiveIntegerField(
                default=0,
                help_text="Versions up to this one are written to the store in envelope segments.",
            ),
        ),
        migrations.CreateModel(
            name="EnvelopeSegment",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("first_version", models.PositiveIntegerField()),
                ("last_version", models.PositiveIntegerField()),
                (
                    "key",
                    models.CharField(help_text="Object key inside the store.", max_length=512, unique=True),
                ),
                ("size", models.BigIntegerField(default=0, help_text="Object size in bytes, once written.")),
                (
                    "written_at",
                    models.DateTimeField(
                        blank=True, help_text="Empty while the upload may not have happened yet.", null=True
                    ),
                ),
                (
                    "gc_candidate_since",
                    models.DateTimeField(
                        blank=True,
                        db_index=True,
                        help_text="Set when retention released one of its versions.",
                        null=True,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "execution",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="envelope_segments",
                        to="statebag.execution",
                    ),
                ),
            ],
            options={
                "ordering": ["execution_id", "first_version"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("execution", "first_version"), name="envelope_segment_unique_start"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("first_version__gte", 1), ("last_version__gte", models.F("first_version"))
                        ),
                        name="envelope_segment_range_valid",
                    ),
                ],
            },
        ),
        migrations.RunPython(create, remove),
    ]
