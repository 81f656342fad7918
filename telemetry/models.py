"""Telemetry from SDKs: raw batches as received (kept briefly), per-minute rollups (kept for
months), and per-minute ingestion counts operators read (accepted, refused, duplicates).

Environments are named by key, as the SDK key that filed a batch resolves to: ingestion needs
no lookup, and rollups outlive nothing they refer to (retention deletes them). A write key's
batches (a hydrator with no flag client) are filed under its owner's namespace instead,
``owner:<owner id>`` (``telemetry.services.owner_namespace``), in the same ``environment``
columns: sized for the longer of the two."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

# An environment key (at most 64) or "owner:" and an owner id (at most 128).
NAMESPACE_MAX_LENGTH = 140


class RawBatch(models.Model):
    """One accepted batch, as checked (``telemetry.wire.Batch.payload``). Its (environment,
    batch id) is unique: a replay is refused by the database, not by a lookup first."""

    environment = models.CharField(max_length=NAMESPACE_MAX_LENGTH)
    batch = models.CharField(max_length=32, help_text="The SDK's batch id (idempotency key).")
    minute = models.DateTimeField(help_text="The minute it is counted under.")
    received_at = models.DateTimeField()
    sdk = models.CharField(max_length=130, blank=True, default="")
    dropped = models.BigIntegerField(default=0, help_text="Reports the SDK dropped before this batch.")
    payload = models.TextField()
    aggregated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "raw telemetry batch"
        constraints = [
            models.UniqueConstraint(fields=["environment", "batch"], name="telemetry_batch_unique")
        ]
        indexes = [
            # The aggregation's queue: small, since rows leave it within a minute.
            models.Index(
                fields=["id"], condition=Q(aggregated_at__isnull=True), name="telemetry_raw_pending"
            ),
            models.Index(fields=["received_at"], name="telemetry_raw_received"),
        ]

    def __str__(self) -> str:
        return f"{self.environment}:{self.batch}"


class EvaluationRollup(models.Model):
    """Evaluations of one flag in one environment and minute, per (variant, value, reason),
    with the distinct units as a merged HyperLogLog sketch (``telemetry.sketch``)."""

    environment = models.CharField(max_length=NAMESPACE_MAX_LENGTH)
    minute = models.DateTimeField()
    flag = models.CharField(max_length=64)
    variant = models.JSONField(null=True, blank=True, help_text="A string, or null for none.")
    value = models.TextField(help_text="The value served, as canonical JSON.")
    reason = models.CharField(max_length=16)
    series = models.CharField(max_length=32, help_text="Digest of (flag, variant, value, reason).")
    evaluations = models.BigIntegerField(default=0)
    units = models.BinaryField(null=True, blank=True, help_text="HyperLogLog registers; empty: not tracked.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["environment", "minute", "series"], name="telemetry_eval_unique")
        ]
        indexes = [models.Index(fields=["environment", "flag", "minute"], name="telemetry_eval_flag")]

    def __str__(self) -> str:
        return f"{self.environment} {self.flag} {self.minute:%Y-%m-%d %H:%M}"


class CohortRollup(models.Model):
    """The statebag's economics of one configuration cohort in one environment and minute:
    summed counters and merged latency histograms."""

    environment = models.CharField(max_length=NAMESPACE_MAX_LENGTH)
    minute = models.DateTimeField()
    cohort = models.TextField(help_text="The cohort's flag values, as canonical JSON.")
    series = models.CharField(max_length=32, help_text="Digest of the cohort.")
    reports = models.BigIntegerField(default=0, help_text="Cohort entries merged in.")
    counters = models.JSONField(default=dict)
    latency = models.JSONField(default=dict, help_text='{"hydrate": {"4": 12, ...}}: ms upper bound: count.')

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "minute", "series"], name="telemetry_cohort_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.environment} {self.cohort} {self.minute:%Y-%m-%d %H:%M}"


class IngestionMinute(models.Model):
    """What one environment's SDKs sent in one minute: batches stored and their dropped
    reports (counted by the aggregation), and batches refused over the ingestion limit or
    replayed (counted by the web processes)."""

    environment = models.CharField(max_length=NAMESPACE_MAX_LENGTH)
    minute = models.DateTimeField()
    batches = models.BigIntegerField(default=0)
    evaluations = models.BigIntegerField(default=0)
    dropped = models.BigIntegerField(default=0, help_text="Reports SDKs dropped (service unreachable).")
    refused = models.BigIntegerField(default=0, help_text="Batches answered 429 (over the limit).")
    duplicates = models.BigIntegerField(default=0, help_text="Batches sent again (answered 200).")

    class Meta:
        verbose_name = "telemetry ingestion minute"
        ordering = ["-minute", "environment"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "minute"], name="telemetry_ingestion_unique")
        ]

    def __str__(self) -> str:
        return f"{self.environment} {self.minute:%Y-%m-%d %H:%M}"


class FlagActivity(models.Model):
    """When a flag was first and last evaluated in an environment, kept by the per-minute
    aggregation so that "not evaluated in N days" is one indexed read, not a scan of rollups.

    The row whose ``flag`` is empty (``ENVIRONMENT_ROW``) is the environment's own: when its SDKs
    first and last reported any evaluation. It tells a flag never evaluated in an environment
    whose SDKs report (dead) from one in an environment without telemetry (unknown)."""

    ENVIRONMENT_ROW = ""

    environment = models.CharField(max_length=NAMESPACE_MAX_LENGTH)
    flag = models.CharField(max_length=64, blank=True)
    first_evaluated_at = models.DateTimeField(help_text="The minute of its first evaluation reported.")
    last_evaluated_at = models.DateTimeField(help_text="The minute of its latest evaluation reported.")

    class Meta:
        verbose_name = "flag activity"
        verbose_name_plural = "flag activity"
        constraints = [
            models.UniqueConstraint(fields=["flag", "environment"], name="telemetry_activity_unique")
        ]

    def __str__(self) -> str:
        return f"{self.environment} {self.flag or '(any flag)'} {self.last_evaluated_at:%Y-%m-%d %H:%M}"
