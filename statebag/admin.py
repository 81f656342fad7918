"""Read-only browsers: executions as a time machine (their versions with each one's hash check,
any version's state, what changed between two), manifests with their hash chain, packs with
their blobs. Manifests and blobs are immutable, so nothing here can add, change or delete them.

Every list answers in a fixed number of queries whatever the table's size: related figures
come from per-row subqueries on the page's rows only, and the row count stops at
``COUNT_LIMIT`` rather than counting a table of millions."""

from __future__ import annotations

import json
from datetime import timedelta
from functools import cached_property
from typing import Any, TypeVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import SimpleListFilter
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, IntegerField, Model, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import content_disposition_header
from django.utils.translation import gettext_lazy as _
from django_stubs_ext import StrOrPromise

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
    ManifestParent,
    Pack,
    Pin,
    WriteKey,
    validate_owner_id,
)
from .services import manifest_chain
from .time_machine import (
    STATE_PREVIEW_BYTES,
    StateUnavailable,
    manifest_of,
    state_diff,
    state_json,
    version_page,
)

M = TypeVar("M", bound=Model)
P = TypeVar("P", bound=Model)

# One admin site serves every app. There is no public site, so no "View site" link (it was a
# 404); the product's name heads every page.
admin.site.site_url = None
admin.site.site_header = _("Analemma")
admin.site.site_title = _("Analemma admin")
admin.site.index_title = _("Dashboard")

COUNT_LIMIT = 10_000
# Reading a hydrated state (shown, downloaded or compared) needs this Execution permission.
VIEW_STATE = "view_state"


class CappedCountPaginator(Paginator[Any]):
    """Counts at most ``COUNT_LIMIT`` rows (a COUNT over a LIMITed subquery), so a list of
    millions costs what one of ten thousand does; the pages past it are reached by filtering
    or searching. ``capped`` says the count stopped there."""

    @cached_property
    def count(self) -> int:
        rows: Any = self.object_list  # the changelist's queryset
        found = int(rows[: COUNT_LIMIT + 1].count())
        self.capped = found > COUNT_LIMIT
        return min(found, COUNT_LIMIT)

    capped = False


class ReadOnlyAdmin(admin.ModelAdmin[M]):
    """Shows readonly_fields, in order, and allows no add, change or delete."""

    paginator = CappedCountPaginator
    show_full_result_count = False
    # Facet counts (``?_facets=True``) count each filter's choices over the whole filtered
    # table, with no cap: on millions of rows that is the full-table COUNT the paginator avoids.
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50

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


WORKFLOW_CHOICES_LIMIT = 100


class WorkflowFilter(SimpleListFilter):
    """The workflows, read from the executions' own index (a DISTINCT over the versions or
    transactions would read every row), at most ``WORKFLOW_CHOICES_LIMIT`` of them."""

    title = _("workflow")
    parameter_name = "workflow"
    field_path = "workflow_id"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = (
            Execution.objects.order_by("workflow_id")
            .values_list("workflow_id", flat=True)
            .distinct()[:WORKFLOW_CHOICES_LIMIT]
        )
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() is None:
            return queryset
        return queryset.filter(**{self.field_path: self.value()})


class ManifestWorkflowFilter(WorkflowFilter):
    field_path = "execution__workflow_id"


class CommittedViaFilter(SimpleListFilter):
    """The ways a version is committed, named here rather than found by a DISTINCT over every
    version."""

    title = _("committed via")
    parameter_name = "committed_via"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
        return [
            ("2pc", _("two-phase commit")),
            ("direct", _("one step, with uploads")),
            ("noupload", _("one step, nothing to upload")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset if self.value() is None else queryset.filter(committed_via=self.value())


class VersionCompareForm(forms.Form):
    older = forms.IntegerField(min_value=1, label=_("from version"))
    newer = forms.IntegerField(min_value=1, label=_("to version"))


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyAdmin[Execution]):
    list_display = ("execution_id", "owner_id", "workflow_id", "status", "head_version", "updated_at")
    list_filter = ("status", WorkflowFilter)
    search_fields = ("execution_id", "owner_id", "workflow_id")
    ordering = ("-updated_at",)
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

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        return super().get_queryset(request).select_related("head")

    @admin.display(description=_("head"), ordering="head__version")
    def head_version(self, obj: Execution) -> str:
        return f"v{obj.head.version}" if obj.head else "—"

    @admin.display(description=_("head manifest"))
    def head_link(self, obj: Execution) -> str:
        return _link(obj.head, f"v{obj.head.version} {obj.head.hash[:16]}") if obj.head else "—"

    # The time machine -------------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/diff/", view(self.diff_view), name="statebag_execution_diff"),
            path(
                "<path:object_id>/versions/<int:version>/",
                view(self.state_view),
                name="statebag_execution_state",
            ),
            path(
                "<path:object_id>/versions/<int:version>/state.json",
                view(self.state_download),
                name="statebag_execution_state_json",
            ),
            *super().get_urls(),
        ]

    def _viewable(self, request: HttpRequest, object_id: str) -> Execution:
        execution = self.get_object(request, object_id)
        if execution is None:
            raise Http404(_("No such execution."))
        if not self.has_view_permission(request, execution):
            raise PermissionDenied
        return execution

    def has_view_state_permission(self, request: HttpRequest) -> bool:
        """Whether the user may read hydrated states (shown, downloaded or compared): more than
        the metadata the view permission shows. Superusers have every permission."""
        return request.user.has_perm(f"{self.opts.app_label}.{VIEW_STATE}")

    def _state_viewable(self, request: HttpRequest, object_id: str) -> Execution:
        execution = self._viewable(request, object_id)
        if not self.has_view_state_permission(request):
            raise PermissionDenied
        return execution

    def _context(self, request: HttpRequest, execution: Execution, title: str) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "execution": execution,
            "title": title,
            "subtitle": str(execution),
            "execution_url": reverse("admin:statebag_execution_change", args=[execution.pk]),
        }

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        execution = self._viewable(request, object_id)
        page, rows = version_page(execution, request.GET.get("versions"))
        head = execution.head.version if execution.head else 0
        compare = VersionCompareForm(initial={"older": max(head - 1, 1), "newer": max(head, 1)})
        context = {
            "versions_page": page,
            "version_rows": rows,
            "can_view_state": self.has_view_state_permission(request),
            "compare_form": compare,
            "execution_pk": execution.pk,
            "diff_url": reverse("admin:statebag_execution_diff", args=[execution.pk]),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, context)

    def state_view(self, request: HttpRequest, object_id: str, version: int) -> HttpResponse:
        execution = self._state_viewable(request, object_id)
        manifest = manifest_of(execution, version)
        if manifest is None:
            raise Http404(_("No such version."))
        context = self._context(request, execution, str(_("State at version %(v)d") % {"v": version}))
        context.update(manifest=manifest, version=version, preview_bytes=STATE_PREVIEW_BYTES)
        try:
            text = state_json(manifest)
        except StateUnavailable as exc:
            context["unavailable"] = str(exc)
        else:
            context["size"] = len(text)
            context["truncated"] = len(text) > STATE_PREVIEW_BYTES
            context["state_text"] = _pretty(
                text[:STATE_PREVIEW_BYTES], complete=len(text) <= STATE_PREVIEW_BYTES
            )
        return TemplateResponse(request, "admin/statebag/execution/state.html", context)

    def state_download(self, request: HttpRequest, object_id: str, version: int) -> HttpResponse:
        execution = self._state_viewable(request, object_id)
        manifest = manifest_of(execution, version)
        if manifest is None:
            raise Http404(_("No such version."))
        try:
            text = state_json(manifest)
        except StateUnavailable as exc:
            return HttpResponse(str(exc), status=409, content_type="text/plain; charset=utf-8")
        response = HttpResponse(text, content_type="application/json")
        # Quoted, or encoded per RFC 6266 when the ids are not ASCII (always a header for an
        # attachment: None only for an inline response with no name).
        disposition = content_disposition_header(
            True, f"{execution.owner_id}-{execution.execution_id}-v{version}.json"
        )
        response["Content-Disposition"] = disposition or "attachment"
        response["Cache-Control"] = "no-store"
        return response

    def diff_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        execution = self._state_viewable(request, object_id)
        form = VersionCompareForm(request.GET)
        context = self._context(request, execution, str(_("What changed")))
        context["compare_form"] = form
        context["diff_url"] = request.path
        if form.is_valid():
            older = manifest_of(execution, form.cleaned_data["older"])
            newer = manifest_of(execution, form.cleaned_data["newer"])
            if older is None or newer is None:
                context["unavailable"] = _("This execution has no such version.")
            else:
                context.update(older=older, newer=newer)
                try:
                    context["diff"] = state_diff(older, newer)
                except StateUnavailable as exc:
                    context["unavailable"] = str(exc)
        return TemplateResponse(request, "admin/statebag/execution/diff.html", context)


class EntryInline(ReadOnlyInline[ManifestEntry, Manifest]):
    model = ManifestEntry
    fields = ("field", "kind", "digest", "stored")
    readonly_fields = fields
    show_change_link = False


def _pretty(text: bytes, *, complete: bool) -> str:
    """Indented JSON for reading; a cut-off preview, or a state nested too deep to indent, is
    shown as it is."""
    if complete:
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except RecursionError:
            pass
    return text.decode("utf-8", errors="replace")


def _count_of(model: type[Model], link: str) -> Coalesce:
    """How many ``model`` rows point at the outer row: one subquery per listed row only."""
    rows = model._default_manager.filter(**{link: OuterRef("pk")}).order_by().values(link)
    return Coalesce(
        Subquery(rows.annotate(total=Count("pk")).values("total")[:1], output_field=IntegerField()), 0
    )


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
    list_filter = ("retained", CommittedViaFilter, ManifestWorkflowFilter)
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
            .annotate(parent_total=_count_of(ManifestParent, "child"))
        )

    @admin.display(description=_("hash"))
    def short_hash(self, obj: Manifest) -> str:
        return obj.hash[:16]

    # Not sortable: ordering by a per-row subquery computes it for every row of the table.
    @admin.display(description=_("parents"))
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
        return super().get_queryset(request).annotate(blob_total=_count_of(Blob, "pack"))

    # Not sortable: ordering by a per-row subquery computes it for every row of the table.
    @admin.display(description=_("blobs"))
    def blob_count(self, obj: Pack) -> int:
        return int(getattr(obj, "blob_total", 0))


class PinInline(ReadOnlyInline[Pin, CommitTransaction]):
    model = Pin
    fields = ("pack", "digest", "created_at")
    readonly_fields = fields
    show_change_link = False


BYPASS_WINDOW = timedelta(days=1)


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
        # A guarantee asked for but not delivered must be visible, not silent. Counted over a
        # recent window, on the versions' time index, however long the history.
        if statebag_settings().use_2pc:
            since = timezone.now() - BYPASS_WINDOW
            direct = Manifest.objects.filter(committed_via="direct", created_at__gte=since).count()
            if direct:
                self.message_user(
                    request,
                    _(
                        "USE_2PC is on, but %(count)d version(s) in the last 24 hours were committed "
                        "without the two-phase commit."
                    )
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
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # uncapped counts over the whole table, as ReadOnlyAdmin says
    create_form = WriteKeyCreateForm
    key_element_id = "write-key"

    def build_key(self, data: dict[str, Any]) -> WriteKey:
        return WriteKey(owner_id=data["owner_id"], name=data["name"])
