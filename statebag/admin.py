"""Read-only browsers: executions, manifests with their hash chain, packs with their blobs.
Manifests and blobs are immutable, so nothing here can add, change or delete them."""

from __future__ import annotations

from typing import Any, TypeVar

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from keys.admin import OneTimeKeyAdmin

from .conf import statebag_settings
from .models import (
    Blob,
    CommitTransaction,
    CompressionDictionary,
    DehydrationJob,
    Execution,
    GCRun,
    Manifest,
    ManifestEntry,
    Pack,
    Pin,
    WriteKey,
    validate_owner_id,
)
from .services import manifest_chain

M = TypeVar("M", bound=Model)
P = TypeVar("P", bound=Model)


class ReadOnlyAdmin(admin.ModelAdmin[M]):
    """Shows readonly_fields, in order, and allows no add, change or delete."""

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields or super().get_fields(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline[M, P]):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _link(obj: Any, text: str) -> str:
    meta = obj._meta
    return format_html(
        '<a href="{}">{}</a>',
        reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk]),
        text,
    )


class ManifestInline(ReadOnlyInline[Manifest, Execution]):
    model = Manifest
    fields = ("version", "hash", "raw_bytes", "created_at")
    readonly_fields = fields
    ordering = ("-version",)


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyAdmin[Execution]):
    list_display = ("execution_id", "owner_id", "workflow_id", "status", "head_version", "updated_at")
    list_filter = ("status", "workflow_id")
    search_fields = ("execution_id", "owner_id", "workflow_id")
    readonly_fields = (
        "owner_id",
        "workflow_id",
        "execution_id",
        "status",
        "head_link",
        "created_at",
        "updated_at",
        "finished_at",
    )
    inlines = [ManifestInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        return super().get_queryset(request).select_related("head")

    @admin.display(description=_("head"), ordering="head__version")
    def head_version(self, obj: Execution) -> str:
        return f"v{obj.head.version}" if obj.head else "—"

    @admin.display(description=_("head manifest"))
    def head_link(self, obj: Execution) -> str:
        return _link(obj.head, f"v{obj.head.version} {obj.head.hash[:16]}") if obj.head else "—"


class EntryInline(ReadOnlyInline[ManifestEntry, Manifest]):
    model = ManifestEntry
    fields = ("field", "kind", "digest", "stored")
    readonly_fields = fields
    show_change_link = False


@admin.register(Manifest)
class ManifestAdmin(ReadOnlyAdmin[Manifest]):
    list_display = (
        "__str__",
        "short_hash",
        "parent_count",
        "raw_bytes",
        "retained",
        "committed_via",
        "created_at",
    )
    list_filter = ("retained", "committed_via", "execution__workflow_id")
    search_fields = ("hash", "execution__execution_id", "execution__owner_id")
    readonly_fields = (
        "execution",
        "version",
        "hash",
        "chain",
        "children_links",
        "cohort",
        "idempotency_key",
        "raw_bytes",
        "committed_via",
        "retained",
        "pinned",
        "released_at",
        "created_at",
    )
    inlines = [EntryInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Manifest]:
        return (
            super()
            .get_queryset(request)
            .select_related("execution")
            .annotate(parent_total=Count("parent_links"))
        )

    @admin.display(description=_("hash"))
    def short_hash(self, obj: Manifest) -> str:
        return obj.hash[:16]

    @admin.display(description=_("parents"), ordering="parent_total")
    def parent_count(self, obj: Manifest) -> int:
        return int(getattr(obj, "parent_total", 0))

    @admin.display(description=_("hash chain (newest first)"))
    def chain(self, obj: Manifest) -> str:
        links = manifest_chain(obj)
        return format_html(
            '<ol class="statebag-chain">{}</ol>',
            format_html_join(
                "",
                '<li>{} <code>{}</code> <span class="{}">{}</span></li>',
                (
                    (
                        _link(link.manifest, f"v{link.manifest.version}"),
                        link.manifest.hash[:16],
                        "chain-ok" if link.valid else "chain-broken",
                        "hash verified" if link.valid else "HASH MISMATCH",
                    )
                    for link in links
                ),
            ),
        )

    @admin.display(description=_("children"))
    def children_links(self, obj: Manifest) -> str:
        children = list(obj.children.all())
        if not children:
            return "—"
        return format_html_join(", ", "{}", ((_link(c, f"v{c.version}"),) for c in children))


class BlobInline(ReadOnlyInline[Blob, Pack]):
    model = Blob
    fields = ("digest", "offset", "length", "codec", "raw_size", "dict_id")
    readonly_fields = fields
    show_change_link = False


@admin.register(Pack)
class PackAdmin(ReadOnlyAdmin[Pack]):
    list_display = ("key", "owner_id", "kind", "size", "blob_count", "created_at")
    list_filter = ("kind",)
    search_fields = ("key", "owner_id", "digest")
    readonly_fields = ("key", "owner_id", "kind", "digest", "size", "created_at")
    inlines = [BlobInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Pack]:
        return super().get_queryset(request).annotate(blob_total=Count("blobs"))

    @admin.display(description=_("blobs"), ordering="blob_total")
    def blob_count(self, obj: Pack) -> int:
        return int(getattr(obj, "blob_total", 0))


class PinInline(ReadOnlyInline[Pin, CommitTransaction]):
    model = Pin
    fields = ("pack", "digest", "created_at")
    readonly_fields = fields
    show_change_link = False


@admin.register(CommitTransaction)
class CommitTransactionAdmin(ReadOnlyAdmin[CommitTransaction]):
    list_display = ("id", "execution_id", "owner_id", "state", "expires_at", "created_at", "finished_at")
    list_filter = ("state",)
    search_fields = ("id", "execution_id", "owner_id", "idempotency_key")
    readonly_fields = (
        "id",
        "owner_id",
        "workflow_id",
        "execution_id",
        "state",
        "parents",
        "upload_keys",
        "idempotency_key",
        "expires_at",
        "manifest",
        "reason",
        "created_at",
        "finished_at",
    )
    inlines = [PinInline]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # A guarantee asked for but not delivered must be visible, not silent.
        if statebag_settings().use_2pc:
            direct = Manifest.objects.filter(committed_via="direct").count()
            if direct:
                self.message_user(
                    request,
                    _("USE_2PC is on, but %(count)d version(s) were committed without the two-phase commit.")
                    % {"count": direct},
                    messages.WARNING,
                )
        return super().changelist_view(request, extra_context)


@admin.register(Pin)
class PinAdmin(ReadOnlyAdmin[Pin]):
    list_display = ("pack", "digest", "transaction", "transaction_state", "created_at")
    list_filter = ("transaction__state",)
    search_fields = ("digest", "pack__key")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Pin]:
        return super().get_queryset(request).select_related("pack", "transaction")

    @admin.display(description=_("transaction state"))
    def transaction_state(self, obj: Pin) -> str:
        return obj.transaction.state


@admin.register(GCRun)
class GCRunAdmin(ReadOnlyAdmin[GCRun]):
    list_display = (
        "kind",
        "started_at",
        "duration_ms",
        "candidates",
        "deleted_objects",
        "deleted_bytes",
        "store_lists",
        "dry_run",
    )
    list_filter = ("kind", "dry_run")
    readonly_fields = (
        "kind",
        "started_at",
        "finished_at",
        "duration_ms",
        "candidates",
        "deleted_objects",
        "deleted_bytes",
        "store_lists",
        "dry_run",
        "detail",
    )


@admin.register(DehydrationJob)
class DehydrationJobAdmin(ReadOnlyAdmin[DehydrationJob]):
    list_display = ("id", "execution_id", "owner_id", "status", "attempts", "manifest", "created_at")
    list_filter = ("status",)
    list_select_related = ("manifest__execution",)
    search_fields = ("id", "execution_id", "owner_id")
    readonly_fields = (
        "id",
        "owner_id",
        "workflow_id",
        "execution_id",
        "parent",
        "status",
        "attempts",
        "manifest",
        "payload",
        "error",
        "submitted_by",
        "created_at",
        "updated_at",
    )


@admin.register(CompressionDictionary)
class CompressionDictionaryAdmin(ReadOnlyAdmin[CompressionDictionary]):
    list_display = (
        "owner_id",
        "workflow_id",
        "dict_id",
        "size",
        "samples",
        "sample_bytes",
        "active",
        "legacy",
        "created_at",
    )
    list_filter = ("active", "legacy")
    search_fields = ("owner_id", "workflow_id", "dict_id")


class WriteKeyCreateForm(forms.Form):
    owner_id = forms.CharField(
        max_length=128, validators=[validate_owner_id], help_text=_("The owner this key commits for.")
    )
    name = forms.CharField(required=False, max_length=128)


@admin.register(WriteKey)
class WriteKeyAdmin(OneTimeKeyAdmin[WriteKey]):
    list_display = ("prefix", "owner_id", "name", "created_by", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("owner_id", "prefix", "name")
    create_form = WriteKeyCreateForm
    key_element_id = "write-key"

    def build_key(self, data: dict[str, Any]) -> WriteKey:
        return WriteKey(owner_id=data["owner_id"], name=data["name"])
