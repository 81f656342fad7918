"""The indexes the admin and its dashboard sort and filter by: recent executions (all or by
status) and their workflows, recent transactions, jobs and GC runs, and commits, aborts and
packs by time for the dashboard's per-minute and per-hour figures.

These tables grow large, and a plain CREATE INDEX blocks writes to its table until it is
built. On PostgreSQL each index is built CONCURRENTLY, outside a transaction (so this migration
is not atomic: one that fails part-way leaves the indexes built so far, and an invalid one to
drop, before it is run again). SQLite has no such statement and builds them the plain way."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    """AddIndexConcurrently on PostgreSQL, AddIndex elsewhere. The same in the migration state."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("statebag", "0011_admin_labels_and_indexes"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="committransaction",
            index=models.Index(fields=["created_at", "id"], name="transaction_recent"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="committransaction",
            index=models.Index(fields=["state", "finished_at"], name="transaction_state_finished"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="dehydrationjob",
            index=models.Index(fields=["created_at", "id"], name="dehydration_job_recent"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="execution",
            index=models.Index(fields=["updated_at", "id"], name="execution_recent"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="execution",
            index=models.Index(fields=["status", "updated_at", "id"], name="execution_status_recent"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="execution",
            index=models.Index(fields=["workflow_id"], name="execution_workflow"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="gcrun",
            index=models.Index(fields=["started_at", "id"], name="gcrun_recent"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="gcrun",
            index=models.Index(fields=["kind", "started_at"], name="gcrun_kind_started"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="manifest",
            index=models.Index(fields=["created_at"], name="manifest_created"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="pack",
            index=models.Index(fields=["created_at"], name="pack_created"),
        ),
    ]
