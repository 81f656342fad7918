"""Inline values are stored as JSON text, not jsonb: jsonb sorts every object's keys, and agents
replay these values into LLM prompts, where key order is part of the content. Existing rows are
converted as they are (their order was already lost to jsonb; on SQLite they were text already).
A version that uploads nothing is recorded in one step, as ``noupload``: not a bypass of the
two-phase commit (there is nothing a collector could race)."""

from django.db import migrations, models

import statebag.models


class Migration(migrations.Migration):
    dependencies = [("statebag", "0008_dictionaries_per_owner")]

    operations = [
        migrations.AlterField(
            model_name="manifest",
            name="committed_via",
            field=models.CharField(
                default="direct",
                help_text="2pc; direct (recorded after its uploads, one step); or noupload (nothing "
                "uploaded, so nothing for a collector to race: one step is the whole protocol).",
                max_length=8,
            ),
        ),
        migrations.AlterField(
            model_name="manifestentry",
            name="stored",
            field=statebag.models.JSONTextField(
                help_text="The field's stored form: inline value or pointer, as JSON text."
            ),
        ),
        migrations.AlterField(
            model_name="dehydrationjob",
            name="state",
            field=statebag.models.JSONTextField(
                help_text="The submitted state; cleared once the job succeeded."
            ),
        ),
        migrations.AlterField(
            model_name="dehydrationjob",
            name="payload",
            field=statebag.models.JSONTextField(
                blank=True, help_text="The control-plane payload it produced.", null=True
            ),
        ),
    ]
