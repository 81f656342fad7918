"""A plan step gets guard rules: the metrics its treatment cohort is compared on while it is
live (rollout.guard_rules; judged by telemetry.guards)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("rollout", "0009_flag_tags_and_list_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="rolloutstep",
            name="guards",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text='Checked while the step is live, e.g. [{"metric": "error_rate", "worse": "higher", "tolerance": 0.1, "tolerance_kind": "relative", "min_sample": 500}] (README: Rollout, guards).',
            ),
        ),
    ]
