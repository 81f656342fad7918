"""Feature flags per environment, immutable revisions of each environment's flag set, SDK
keys and rollout plans (DESIGN.md section 6). Writes go through rollout.services; the audit
log is the audit app's."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from analemma_sdk.flags.spec import KEY_HELP, KEY_PATTERN, flag_set_document, sdk_key_compose
from keys.models import SecretKey

slug = RegexValidator(KEY_PATTERN, KEY_HELP)


class Environment(models.Model):
    key = models.CharField(max_length=64, unique=True, validators=[slug])
    name = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.key


class SdkKey(SecretKey):
    """Read-only key for one environment: ``ask_<environment>_<secret>``. Only a hash is
    stored; the key is shown once."""

    kind = "sdk_key"
    scope_field = "environment__key"

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="sdk_keys")

    class Meta(SecretKey.Meta):
        verbose_name = "SDK key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.environment})"

    def compose(self, secret: str) -> str:
        return sdk_key_compose(self.environment.key, secret)

    def prefix_of(self, raw: str) -> str:
        return raw[: len(sdk_key_compose(self.environment.key, "")) + 6]

    def scope(self) -> str:
        return self.environment.key

    def audit_environment(self) -> str:
        return self.environment.key


class Flag(models.Model):
    class Kind(models.TextChoices):  # the document's kinds (analemma_sdk.flags.spec.KINDS)
        BOOLEAN = "boolean", "Boolean"
        STRING = "string", "String"
        NUMBER = "number", "Number"
        JSON = "json", "JSON"

    key = models.CharField(max_length=64, unique=True, validators=[slug])
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.BOOLEAN)
    default_value = models.JSONField(help_text="Served when the flag is off, or when nothing matches.")
    owner = models.CharField(max_length=150, blank=True, default="")
    tags = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="Words to find the flag by, separated by spaces (not served to SDKs).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]
        # The flags list filters by these at 10,000 flags.
        indexes = [
            models.Index(fields=["owner"], name="flag_owner"),
            models.Index(fields=["kind"], name="flag_kind"),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def tag_list(self) -> list[str]:
        return self.tags.split()


class FlagState(models.Model):
    """A flag's current configuration in one environment (the working copy every revision
    snapshots)."""

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="states")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="flag_states")
    enabled = models.BooleanField(
        default=False, help_text="Off is the kill switch: everyone gets the default."
    )
    value = models.JSONField(null=True, blank=True, help_text="Served to units in the rollout.")
    percentage = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=100,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Share of units that get the value (0-100, two decimals).",
    )
    variants = models.JSONField(
        default=list,
        blank=True,
        help_text='A/B variants: [{"value": ..., "weight": 0-100000}], weights sum to 100000.',
    )
    targets = models.JSONField(default=list, blank=True, help_text='[{"units": ["exec-1"], "value": ...}]')
    rules = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"attribute": "workflow_id", "op": "in", "values": [...], "value": ...}]',
    )
    bucket_by = models.CharField(max_length=64, default="execution_id")
    salt = models.CharField(max_length=64, blank=True, default="")
    seed = models.IntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["flag", "environment"], name="flag_state_unique"),
            models.CheckConstraint(
                condition=Q(percentage__gte=0) & Q(percentage__lte=100), name="percentage_0_100"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.flag} in {self.environment}"


class Revision(models.Model):
    """One immutable version of an environment's flag set: the document SDKs are served.

    A revision stores only what it changed (``diff``); its flags are the ``FlagVersion`` rows
    open at its number, so a change costs the flags it changes, not the flags there are.
    Revisions saved before that keep their whole document in ``snapshot``."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    snapshot = models.JSONField(
        null=True, blank=True, editable=False, help_text="The whole document (older revisions)."
    )
    etag = models.CharField(max_length=80)
    diff = models.JSONField(default=list, blank=True)
    reason = models.TextField(blank=True, default="")
    created_by = models.CharField(max_length=150, blank=True, default="")
    rolled_back_to = models.PositiveIntegerField(
        null=True, blank=True, help_text="Set on a rollback revision."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["environment_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "number"], name="revision_number_unique")
        ]

    def __str__(self) -> str:
        return f"{self.environment} r{self.number}"

    def flags(self) -> dict[str, Any]:
        """Every flag's spec in this revision, by key (one query for a newer revision)."""
        if self.snapshot is not None:
            return dict(self.snapshot["flags"])
        return FlagVersion.objects.specs_at(environment_id=self.environment_id, number=self.number)

    def flag(self, key: str) -> dict[str, Any] | None:
        """One flag's spec in this revision, or None when it did not have that flag."""
        if self.snapshot is not None:
            spec: dict[str, Any] | None = self.snapshot["flags"].get(key)
            return spec
        return (
            FlagVersion.objects.at(environment_id=self.environment_id, number=self.number)
            .filter(flag_key=key)
            .values_list("spec", flat=True)
            .first()
        )

    @property
    def document(self) -> dict[str, Any]:
        """The document SDKs were served for this revision (an older revision's as stored:
        its ETag is of those bytes)."""
        if self.snapshot is not None:
            return dict(self.snapshot)
        return flag_set_document(self.environment.key, self.number, self.flags())


class FlagVersionQuerySet(models.QuerySet["FlagVersion"]):
    def at(self, *, environment_id: int, number: int) -> FlagVersionQuerySet:
        return self.filter(environment_id=environment_id, since__lte=number).filter(
            Q(until__isnull=True) | Q(until__gt=number)
        )

    def specs_at(self, *, environment_id: int, number: int) -> dict[str, Any]:
        rows = self.at(environment_id=environment_id, number=number).values_list("flag_key", "spec")
        return dict(sorted(rows))


class FlagVersion(models.Model):
    """One flag's served spec in one environment from revision ``since`` up to, not
    including, revision ``until`` (open while ``until`` is empty). Never edited, only closed."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="flag_versions")
    flag_key = models.CharField(max_length=64)
    spec = models.JSONField()
    since = models.PositiveIntegerField()
    until = models.PositiveIntegerField(null=True, blank=True)

    objects = FlagVersionQuerySet.as_manager()

    class Meta:
        ordering = ["environment_id", "flag_key", "since"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "flag_key", "since"], name="flag_version_unique"),
            models.UniqueConstraint(
                fields=["environment", "flag_key"],
                condition=Q(until__isnull=True),
                name="flag_version_one_open",
            ),
        ]
        indexes = [
            models.Index(fields=["environment", "since"], name="flag_version_since"),
            # A flag's own history across environments, newest first (the flag's page).
            models.Index(fields=["flag_key", "-since"], name="flag_version_history"),
        ]

    def __str__(self) -> str:
        return f"{self.flag_key} in {self.environment_id} r{self.since}-{self.until or ''}"


class RolloutPlan(models.Model):
    """Staged steps for one flag (e.g. dev 100 % → prod 5 % → 25 % → 100 %), advanced by a
    periodic task; pausable; an abort restores its flag, in each environment it touched, as it
    was before. Once started, its flag, value and steps are frozen."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        COMPLETED = "completed", "Completed"
        ABORTED = "aborted", "Aborted"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=128)
    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="plans")
    value = models.JSONField(help_text="What the rollout serves to units in it (true for a boolean flag).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT, db_index=True)
    baseline = models.JSONField(default=dict, blank=True, help_text="Environment → revision before the plan.")
    reason = models.TextField(blank=True, default="", help_text="Why it stopped, when it did.")
    created_by = models.CharField(max_length=150, blank=True, default="")
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The operator the periodic advance acts for; it needs their rights.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.flag})"


class RolloutStep(models.Model):
    plan = models.ForeignKey(RolloutPlan, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="+")
    percentage = models.DecimalField(
        max_digits=5, decimal_places=2, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    not_before = models.DateTimeField(null=True, blank=True, help_text="Earliest time to apply it.")
    min_soak_seconds = models.PositiveIntegerField(
        default=0, help_text="How long it runs before the next step."
    )
    guards = models.JSONField(
        default=list,
        blank=True,
        help_text=(
            'Checked while the step is live, e.g. [{"metric": "error_rate", "worse": "higher", '
            '"tolerance": 0.1, "tolerance_kind": "relative", "min_sample": 500}] (README: Rollout, guards).'
        ),
    )
    applied_at = models.DateTimeField(null=True, blank=True)
    revision_number = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["plan_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "position"], name="plan_step_position_unique"),
            models.CheckConstraint(
                condition=Q(percentage__gte=0) & Q(percentage__lte=100), name="step_percentage_0_100"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.position}: {self.environment} {self.percentage}%"
