"""Human labels for manifest entries and parent links, and the permission to read a version's
hydrated state (more than the metadata "view" shows). The admin's indexes follow in 0012, built
without blocking writes."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("statebag", "0010_envelopes"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="manifestentry",
            options={
                "ordering": ["manifest_id", "field"],
                "verbose_name": "manifest entry",
                "verbose_name_plural": "manifest entries",
            },
        ),
        migrations.AlterModelOptions(
            name="manifestparent",
            options={"ordering": ["child_id", "position"], "verbose_name": "manifest parent link"},
        ),
        migrations.AlterModelOptions(
            name="execution",
            options={"permissions": [("view_state", "Can read and download hydrated state")]},
        ),
    ]
