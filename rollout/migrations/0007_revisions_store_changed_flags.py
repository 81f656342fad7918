"""Revisions store what they change, not the whole flag set (per-flag versions), and plans
remember who started them and can fail.

Older revisions keep their whole document, renamed ``snapshot``; each environment's latest
revision also opens one version per flag, so the next change writes only what it changes."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def open_versions(apps, schema_editor):
    revision_model = apps.get_model("rollout", "Revision")
    version_model = apps.get_model("rollout", "FlagVersion")
    environment_model = apps.get_model("rollout", "Environment")
    for environment in environment_model.objects.all():
        latest = revision_model.objects.filter(environment=environment).order_by("-number").first()
        if latest is None or latest.snapshot is None:
            continue
        version_model.objects.bulk_create(
            version_model(environment=environment, flag_key=key, spec=spec, since=latest.number)
            for key, spec in sorted(latest.snapshot["flags"].items())
        )


class Migration(migrations.Migration):
    dependencies = [
        ("rollout", "0006_key_prefix_fits_every_environment"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RenameField(model_name="revision", old_name="document", new_name="snapshot"),
        migrations.AlterField(
            model_name="revision",
            name="snapshot",
            field=models.JSONField(
                blank=True, editable=False, help_text="The whole document (older revisions).", null=True
            ),
        ),
        migrations.AddField(
            model_name="rolloutplan",
            name="started_by",
            field=models.ForeignKey(
                blank=True,
                help_text="The operator the periodic advance acts for; it needs their rights.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="rolloutplan",
            name="status",
            field=models.CharField(
                choices=[
                    ("draft", "Draft"),
                    ("running", "Running"),
                    ("paused", "Paused"),
                    ("completed", "Completed"),
                    ("aborted", "Aborted"),
                    ("failed", "Failed"),
                ],
                db_index=True,
                default="draft",
                max_length=10,
            ),
        ),
        migrations.CreateModel(
            name="FlagVersion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("flag_key", models.CharField(max_length=64)),
                ("spec", models.JSONField()),
                ("since", models.PositiveIntegerField()),
                ("until", models.PositiveIntegerField(blank=True, null=True)),
                (
                    "environment",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="flag_versions",
                        to="rollout.environment",
                    ),
                ),
            ],
            options={
                "ordering": ["environment_id", "flag_key", "since"],
                "indexes": [models.Index(fields=["environment", "since"], name="flag_version_since")],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("environment", "flag_key", "since"), name="flag_version_unique"
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("until__isnull", True)),
                        fields=("environment", "flag_key"),
                        name="flag_version_one_open",
                    ),
                ],
            },
        ),
        migrations.RunPython(open_versions, migrations.RunPython.noop),
    ]
