"""Read-only browsers: executions, manifests with their hash chain, packs with their blobs.
Manifests and blobs are immutable, so nothing here can add, change or delete them."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from .models import Blob, Execution, Manifest, ManifestEntry, Pack
from .services import manifest_chain


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
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


class ManifestInline(ReadOnlyInline):
    model = Manifest
    fields = ("version", "hash", "raw_bytes", "created_at")
    readonly_fields = fields
    ordering = ("-version",)


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyAdmin):
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
    fields = readonly_fields
    inlines = [ManifestInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        return super().get_queryset(request).select_related("head")

    @admin.display(description=_("head"), ordering="head__version")
    def head_version(self, obj: Execution) -> str:
        return f"v{obj.head.version}" if obj.head else "—"

    @admin.display(description=_("head manifest"))
    def head_link(self, obj: Execution) -> str:
        return _link(obj.head, f"v{obj.head.version} {obj.head.hash[:16]}") if obj.head else "—"


class EntryInline(ReadOnlyInline):
    model = ManifestEntry
    fields = ("field", "kind", "digest", "stored")
    readonly_fields = fields
    show_change_link = False


@admin.register(Manifest)
class ManifestAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "short_hash", "parent_count", "raw_bytes", "created_at")
    list_filter = ("execution__workflow_id",)
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
        "created_at",
    )
    fields = readonly_fields
    inlines = [EntryInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Manifest]:
        return super().get_queryset(request).select_related("execution")

    @admin.display(description=_("hash"))
    def short_hash(self, obj: Manifest) -> str:
        return obj.hash[:16]

    @admin.display(description=_("parents"))
    def parent_count(self, obj: Manifest) -> int:
        return obj.parent_links.count()

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


class BlobInline(ReadOnlyInline):
    model = Blob
    fields = ("digest", "offset", "length", "codec", "raw_size", "dict_id")
    readonly_fields = fields
    show_change_link = False


@admin.register(Pack)
class PackAdmin(ReadOnlyAdmin):
    list_display = ("key", "owner_id", "kind", "size", "blob_count", "created_at")
    list_filter = ("kind",)
    search_fields = ("key", "owner_id", "digest")
    readonly_fields = ("key", "owner_id", "kind", "digest", "size", "created_at")
    fields = readonly_fields
    inlines = [BlobInline]

    @admin.display(description=_("blobs"))
    def blob_count(self, obj: Pack) -> int:
        return obj.blobs.count()
