"""The state bag's records. The database is the source of truth; the store holds bytes.

Manifests and their entries are immutable once written: the versioning service creates them
and nothing updates them. An execution's head is the only pointer that moves.
"""

import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q

from analemma_sdk.statebag import InvalidKeyError
from analemma_sdk.statebag.canonical import parse_json, value_json
from analemma_sdk.statebag.keys import dictionary_key, legacy_dictionary_key, validate_id
from keys.models import SecretKey


class UnreadableJSON:
    """Stored text that is not JSON: the row was changed outside the service. It is handed on
    as this (never as a value), so nothing hashes or serves it as if it were one."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"<not JSON: {self.text[:80]!r}>"

    __str__ = __repr__


class JSONTextField(models.JSONField):
    """A JSON value stored as its text (``value_json``), so its objects keep their keys in the
    order they were given: PostgreSQL's jsonb sorts them, and agents replay these values into
    LLM prompts, where the order is part of the content. A text column on every backend; read
    back with ``parse_json``, which keeps the order too. Forms and the admin show it as JSON."""

    description = "A JSON value, stored as text in its key order"

    def get_internal_type(self) -> str:
        return "TextField"

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if not prepared:
            value = self.get_prep_value(value)
        if value is None:
            # JSON null: its text where the column holds a value always (a field whose stored
            # value is null), SQL NULL only where the column may be empty.
            return None if self.null else "null"
        return value_json(value).decode("utf-8")

    def get_db_prep_save(self, value: Any, connection: Any) -> Any:
        # JSONField saves None as SQL NULL before get_db_prep_value can say otherwise.
        if value is None:
            return self.get_db_prep_value(value, connection)
        return super().get_db_prep_save(value, connection)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        try:
            return parse_json(value.encode("utf-8"))
        except ValueError:
            return UnreadableJSON(value)


def validate_owner_id(value: str) -> None:
    try:
        validate_id("owner id", value)
    except InvalidKeyError as exc:
        raise ValidationError(str(exc)) from None


class Execution(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        FINISHED = "finished", "Finished"

    owner_id = models.CharField(max_length=128, help_text="Tenant that owns the state; dedup scope.")
    workflow_id = models.CharField(max_length=128, help_text="Workflow (type) the execution runs.")
    execution_id = models.CharField(max_length=128, help_text="Orchestrator's execution id.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    head = models.ForeignKey(
        "Manifest",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Latest committed version; moved only by the versioning service.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    enveloped_version = models.PositiveIntegerField(
        default=0,
        help_text="Versions up to this one are written to the store in envelope segments.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner_id", "execution_id"], name="execution_unique_per_owner"),
        ]
        indexes = [
            models.Index(fields=["owner_id", "workflow_id"]),
            # The admin lists the newest first, all or by status, and offers the workflows.
            models.Index(fields=["updated_at", "id"], name="execution_recent"),
            models.Index(fields=["status", "updated_at", "id"], name="execution_status_recent"),
            models.Index(fields=["workflow_id"], name="execution_workflow"),
        ]
        # A version's whole hydrated state is more sensitive than the metadata "view" shows.
        permissions = [("view_state", "Can read and download hydrated state")]

    def __str__(self) -> str:
        return f"{self.owner_id}/{self.execution_id}"


class EnvelopeSegment(models.Model):
    """One envelope object in the store: an execution's versions first..last, written in one
    flush. Recorded before its upload, so every key that may exist is known without listing the
    store: a crash between the two leaves the row, and the next flush writes the same range."""

    execution = models.ForeignKey(Execution, on_delete=models.PROTECT, related_name="envelope_segments")
    first_version = models.PositiveIntegerField()
    last_version = models.PositiveIntegerField()
    key = models.CharField(max_length=512, unique=True, help_text="Object key inside the store.")
    size = models.BigIntegerField(default=0, help_text="Object size in bytes, once written.")
    written_at = models.DateTimeField(
        null=True, blank=True, help_text="Empty while the upload may not have happened yet."
    )
    gc_candidate_since = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="Set when retention released one of its versions."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["execution", "first_version"], name="envelope_segment_unique_start"
            ),
            models.CheckConstraint(
                condition=Q(first_version__gte=1) & Q(last_version__gte=F("first_version")),
                name="envelope_segment_range_valid",
            ),
        ]
        ordering = ["execution_id", "first_version"]

    def __str__(self) -> str:
        return self.key


class Pack(models.Model):
    """One object in the store: a pack of frames, or one legacy single-blob object."""

    class Kind(models.TextChoices):
        PACK = "pack", "Pack"
        OBJECT = "object", "Single object"

    class State(models.TextChoices):
        PENDING = "pending", "Pending (uploaded under a prepared transaction)"
        LIVE = "live", "Live"
        DELETING = "deleting", "Being deleted"

    key = models.CharField(max_length=512, unique=True, help_text="Object key inside the store.")
    owner_id = models.CharField(max_length=128)
    digest = models.CharField(max_length=64, help_text="sha256 of the object's bytes.")
    size = models.BigIntegerField(help_text="Object size in bytes.")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.PACK)
    state = models.CharField(max_length=8, choices=State.choices, default=State.LIVE, db_index=True)
    transaction = models.ForeignKey(
        "CommitTransaction",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="packs",
        help_text="The transaction that first uploaded it.",
    )
    gc_candidate_since = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="Set when something stopped referencing it."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(size__gte=0), name="pack_size_not_negative")]
        # The dashboard charts bytes written per hour.
        indexes = [models.Index(fields=["created_at"], name="pack_created")]

    def __str__(self) -> str:
        return self.key


class Blob(models.Model):
    """One frame in a pack: a field value (or list chunk) addressed by its digest."""

    pack = models.ForeignKey(Pack, on_delete=models.PROTECT, related_name="blobs")
    owner_id = models.CharField(max_length=128)
    digest = models.CharField(max_length=64, help_text="sha256 of the canonical JSON bytes.")
    offset = models.BigIntegerField()
    length = models.BigIntegerField(help_text="Compressed frame length in bytes.")
    codec = models.CharField(max_length=8)
    raw_size = models.BigIntegerField(help_text="Canonical JSON size in bytes.")
    dict_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pack", "digest"], name="blob_unique_per_pack"),
            models.CheckConstraint(
                condition=Q(offset__gte=0) & Q(length__gte=0) & Q(raw_size__gte=0),
                name="blob_sizes_not_negative",
            ),
        ]
        indexes = [models.Index(fields=["owner_id", "digest"])]

    def __str__(self) -> str:
        return f"{self.digest[:12]} in {self.pack_id}"


class Manifest(models.Model):
    """One immutable version of an execution's state, chained to its parents by hash."""

    execution = models.ForeignKey(Execution, on_delete=models.PROTECT, related_name="manifests")
    version = models.PositiveIntegerField()
    hash = models.CharField(max_length=64, unique=True, help_text="Hash over entries and parents' hashes.")
    parents: models.ManyToManyField["Manifest", "ManifestParent"] = models.ManyToManyField(
        "self", symmetrical=False, through="ManifestParent", related_name="children", blank=True
    )
    cohort = models.JSONField(
        default=dict, blank=True, help_text="Flag values the version was written under."
    )
    idempotency_key = models.CharField(
        max_length=128,
        blank=True,
        default="",
        help_text="Caller's key: a retried commit returns this version.",
    )
    raw_bytes = models.BigIntegerField(
        default=0, help_text="Canonical bytes of the offloaded values it references."
    )
    committed_via = models.CharField(
        max_length=8,
        default="direct",
        help_text="2pc; direct (recorded after its uploads, one step); or noupload (nothing uploaded, "
        "so nothing for a collector to race: one step is the whole protocol).",
    )
    retained = models.BooleanField(
        default=True, db_index=True, help_text="False once retention released it to GC."
    )
    pinned = models.BooleanField(default=False, help_text="Kept whatever the retention policy says.")
    released_at = models.DateTimeField(null=True, blank=True)
    blobs = models.ManyToManyField(Blob, related_name="manifests", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["execution", "version"], name="manifest_version_unique"),
            models.UniqueConstraint(
                fields=["execution", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="manifest_idempotency_unique",
            ),
            models.CheckConstraint(condition=Q(version__gte=1), name="manifest_version_positive"),
        ]
        ordering = ["execution_id", "version"]
        # The dashboard counts commits per minute over the last hour and day.
        indexes = [models.Index(fields=["created_at"], name="manifest_created")]

    def __str__(self) -> str:
        return f"{self.execution} v{self.version}"


class ManifestParent(models.Model):
    child = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="parent_links")
    parent = models.ForeignKey(Manifest, on_delete=models.PROTECT, related_name="child_links")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["child", "parent"], name="manifest_parent_unique"),
            models.UniqueConstraint(fields=["child", "position"], name="manifest_parent_position_unique"),
        ]
        ordering = ["child_id", "position"]
        verbose_name = "manifest parent link"

    def __str__(self) -> str:
        return f"{self.child_id} <- {self.parent_id}"


class ManifestEntry(models.Model):
    class Kind(models.TextChoices):
        INLINE = "inline", "Inline"
        BLOB = "blob", "Blob"
        LIST = "list", "Chunked list"

    manifest = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="entries")
    field = models.CharField(max_length=512)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    digest = models.CharField(max_length=64, blank=True, default="", help_text="Blob digest (blob kind).")
    stored = JSONTextField(help_text="The field's stored form: inline value or pointer, as JSON text.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["manifest", "field"], name="entry_unique_per_manifest")
        ]
        ordering = ["manifest_id", "field"]
        verbose_name = "manifest entry"
        verbose_name_plural = "manifest entries"

    def __str__(self) -> str:
        return self.field


class CommitTransaction(models.Model):
    """One dehydration's two-phase commit: PREPARED, then COMMITTED or ABORTED."""

    class State(models.TextChoices):
        PREPARED = "prepared", "Prepared"
        COMMITTED = "committed", "Committed"
        ABORTED = "aborted", "Aborted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner_id = models.CharField(max_length=128)
    workflow_id = models.CharField(max_length=128)
    execution_id = models.CharField(max_length=128)
    parents = models.JSONField(default=list, blank=True, help_text="Manifest hashes the version builds on.")
    upload_keys = models.JSONField(default=list, blank=True, help_text="Objects this transaction uploads.")
    idempotency_key = models.CharField(max_length=128, blank=True, default="")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PREPARED, db_index=True)
    expires_at = models.DateTimeField(db_index=True)
    manifest = models.ForeignKey(Manifest, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "expires_at"]),
            # The admin lists the newest first; the dashboard counts aborts per minute.
            models.Index(fields=["created_at", "id"], name="transaction_recent"),
            models.Index(fields=["state", "finished_at"], name="transaction_state_finished"),
        ]

    def __str__(self) -> str:
        return f"{self.execution_id} {self.state} {str(self.id)[:8]}"


class Pin(models.Model):
    """Holds a pack alive while a prepared transaction reuses (or re-uploads) its blobs."""

    transaction = models.ForeignKey(CommitTransaction, on_delete=models.CASCADE, related_name="pins")
    pack = models.ForeignKey(Pack, on_delete=models.CASCADE, related_name="pins")
    digest = models.CharField(
        max_length=64, blank=True, default="", help_text="Pinned blob; empty for a re-upload."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["transaction", "pack", "digest"], name="pin_unique")]

    def __str__(self) -> str:
        return f"{self.pack_id} by {self.transaction_id}"


class GCRun(models.Model):
    """One background sweep: reaping, GC, retention or an audit."""

    class Kind(models.TextChoices):
        REAP = "reap", "Reap expired transactions"
        GC = "gc", "Garbage collection"
        RETENTION = "retention", "Retention"
        AUDIT = "audit", "Store audit"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    candidates = models.PositiveIntegerField(default=0)
    deleted_objects = models.PositiveIntegerField(default=0)
    deleted_bytes = models.BigIntegerField(default=0)
    store_lists = models.PositiveIntegerField(default=0, help_text="LIST calls made (zero in normal GC).")
    dry_run = models.BooleanField(default=False)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]
        verbose_name = "GC run"
        # One a minute for reaping alone: the admin lists the newest, the dashboard sums by kind.
        indexes = [
            models.Index(fields=["started_at", "id"], name="gcrun_recent"),
            models.Index(fields=["kind", "started_at"], name="gcrun_kind_started"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} at {self.started_at:%Y-%m-%d %H:%M:%S}"


class DehydrationJob(models.Model):
    """A state submitted through the API, dehydrated by a worker into the next version."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner_id = models.CharField(max_length=128)
    workflow_id = models.CharField(max_length=128)
    execution_id = models.CharField(max_length=128)
    parent = models.CharField(max_length=64, blank=True, default="", help_text="Manifest hash it follows.")
    state = JSONTextField(help_text="The submitted state; cleared once the job succeeded.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    payload = JSONTextField(null=True, blank=True, help_text="The control-plane payload it produced.")
    manifest = models.ForeignKey(Manifest, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error = models.TextField(blank=True, default="")
    submitted_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["created_at", "id"], name="dehydration_job_recent")]

    def __str__(self) -> str:
        return f"job {str(self.id)[:8]} {self.execution_id} {self.status}"


class CompressionDictionary(models.Model):
    """A zstd dictionary trained from one owner's recent blobs of one workflow type. It holds
    pieces of those blobs, so only that owner's dehydrations use it and only that owner's
    frames resolve to it; its bytes live under the owner's prefix (``o/<owner>/d/``)."""

    owner_id = models.CharField(
        max_length=128,
        validators=[validate_owner_id],
        help_text="The tenant whose blobs trained it: the only one that uses or reads it.",
    )
    workflow_id = models.CharField(max_length=128, db_index=True)
    dict_id = models.CharField(max_length=64)
    size = models.PositiveIntegerField()
    samples = models.PositiveIntegerField()
    sample_bytes = models.BigIntegerField(default=0)
    active = models.BooleanField(default=True, help_text="New dehydrations of the owner's workflow use it.")
    legacy = models.BooleanField(
        default=False,
        help_text="Trained by an earlier version and kept in the shared dicts/ folder: read for this "
        "owner's frames written then, never used for new ones.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "compression dictionaries"
        constraints = [
            models.UniqueConstraint(fields=["owner_id", "dict_id"], name="dictionary_unique_per_owner"),
            models.UniqueConstraint(
                fields=["owner_id", "workflow_id"],
                condition=Q(active=True),
                name="one_active_dictionary_per_owner_workflow",
            ),
            models.CheckConstraint(
                condition=Q(active=False) | Q(legacy=False), name="legacy_dictionary_never_active"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.owner_id}/{self.workflow_id} {self.dict_id[:12]}"

    @property
    def key(self) -> str:
        """Where its bytes are stored."""
        if self.legacy:
            return legacy_dictionary_key(self.dict_id)
        return dictionary_key(self.owner_id, self.dict_id)


class WriteKey(SecretKey):
    """Lets a Lambda run statebag commits for one owner through the API: ``awk_<secret>``.
    Only a hash is stored; the key is shown once."""

    kind = "write_key"
    scope_field = "owner_id"

    owner_id = models.CharField(max_length=128, db_index=True, validators=[validate_owner_id])

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.owner_id})"

    def compose(self, secret: str) -> str:
        return f"awk_{secret}"

    def prefix_of(self, raw: str) -> str:
        return raw[:12]

    def scope(self) -> str:
        return self.owner_id
