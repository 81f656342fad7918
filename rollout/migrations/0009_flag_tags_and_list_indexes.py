"""Flags get tags to be found by; the flags list filters by owner and kind, and a flag's page reads
its own history across environments, at 10,000 flags: indexes for each."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('rollout', '0008_repair_cached_flag_sets'),
    ]

    operations = [
        migrations.AddField(
            model_name='flag',
            name='tags',
            field=models.CharField(blank=True, default='', help_text='Words to find the flag by, separated by spaces (not served to SDKs).', max_length=200),
        ),
        migrations.AddIndex(
            model_name='flag',
            index=models.Index(fields=['owner'], name='flag_owner'),
        ),
        migrations.AddIndex(
            model_name='flag',
            index=models.Index(fields=['kind'], name='flag_kind'),
        ),
        migrations.AddIndex(
            model_name='flagversion',
            index=models.Index(fields=['flag_key', '-since'], name='flag_version_history'),
        ),
    ]
