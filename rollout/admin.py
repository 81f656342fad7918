"""The operators' tool. Every change goes through rollout.services, so each one makes a new
revision, lands in the audit log and reaches SDKs after commit."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Max, Prefetch, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from keys.admin import OneTimeKeyAdmin

from . import services
from .models import Environment, Flag, FlagState, Revision, RolloutPlan, RolloutStep, SdkKey

CHANGE_PERMISSION = "rollout.change_flagstate"


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


class NoAddDeleteMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin[Environment]):
    list_display = ("key", "name", "current_revision", "created_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Environment]:
        return super().get_queryset(request).annotate(latest_revision=Max("revisions__number"))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("key",) if obj else ()  # SDK keys and served documents carry it

    def save_model(
        self, request: HttpRequest, obj: Environment, form: forms.ModelForm[Environment], change: bool
    ) -> None:
        if change:
            services.environment_rename(environment=obj, name=obj.name, actor=_actor(request))
        else:
            obj.pk = services.environment_create(key=obj.key, name=obj.name, actor=_actor(request)).pk

    @admin.display(description=_("current revision"), ordering="latest_revision")
    def current_revision(self, obj: Environment) -> str:
        number = getattr(obj, "latest_revision", None)
        return f"r{number}" if number else "—"


class SdkKeyCreateForm(forms.Form):
    environment = forms.ModelChoiceField(queryset=Environment.objects.all())
    name = forms.CharField(required=False, max_length=128)


@admin.register(SdkKey)
class SdkKeyAdmin(OneTimeKeyAdmin[SdkKey]):
    list_display = ("prefix", "environment", "name", "created_by", "created_at", "last_used_at", "revoked_at")
    list_filter = ("environment", "revoked_at")
    list_select_related = ("environment",)
    create_form = SdkKeyCreateForm
    key_element_id = "sdk-key"

    def build_key(self, data: dict[str, Any]) -> SdkKey:
        return SdkKey(environment=data["environment"], name=data["name"])


class FlagStateForm(forms.ModelForm[FlagState]):
    class Meta:
        model = FlagState
        fields = (
            "enabled",
            "value",
            "percentage",
            "variants",
            "targets",
            "rules",
            "bucket_by",
            "salt",
            "seed",
        )


class FlagStateInline(admin.StackedInline[FlagState, Flag]):
    model = FlagState
    form = FlagStateForm
    extra = 0
    can_delete = False
    readonly_fields = ("environment", "expected_split")
    fields = (
        "environment",
        "enabled",
        "value",
        "percentage",
        "variants",
        "expected_split",
        "targets",
        "rules",
        "bucket_by",
        "salt",
        "seed",
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("expected split"))
    def expected_split(self, obj: FlagState) -> str:
        if not obj.enabled:
            return f"off: everyone gets the default {json.dumps(obj.flag.default_value)}"
        if obj.variants:
            parts = [
                (f"{v['weight'] / 1000:.3f}".rstrip("0").rstrip("."), json.dumps(v["value"]))
                for v in obj.variants
            ]
            return format_html_join(", ", "{}% → {}", parts)
        return f"{obj.percentage}% → {json.dumps(obj.value)}, the rest → {json.dumps(obj.flag.default_value)}"


class FlagAdminForm(forms.ModelForm[Flag]):
    reason = forms.CharField(
        required=False, help_text=_("Why: recorded with the new revisions and in the audit log.")
    )

    class Meta:
        model = Flag
        fields = ("key", "kind", "default_value", "description", "owner")


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin[Flag]):
    form = FlagAdminForm
    list_display = ("key", "kind", "owner", "states_summary")
    search_fields = ("key", "description", "owner")
    list_filter = ("kind",)
    inlines = [FlagStateInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Flag]:
        states = FlagState.objects.select_related("environment").order_by("environment_id")
        return super().get_queryset(request).prefetch_related(Prefetch("states", queryset=states))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("key", "kind", "default_value") if obj else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("environments"))
    def states_summary(self, obj: Flag) -> str:
        states = obj.states.all()  # prefetched with their environments, in order
        return ", ".join(
            f"{s.environment}: {'on ' + str(s.percentage) + '%' if s.enabled else 'off'}" for s in states
        )

    def save_model(self, request: HttpRequest, obj: Flag, form: forms.ModelForm[Flag], change: bool) -> None:
        if change:
            services.flag_details_update(
                flag=obj, actor=_actor(request), description=obj.description, owner=obj.owner
            )
            return
        try:
            created = services.flag_create(
                key=obj.key,
                kind=obj.kind,
                default_value=obj.default_value,
                description=obj.description,
                owner=obj.owner,
                actor=_actor(request),
            )
        except (services.InvalidDocumentError, ValidationError) as exc:
            raise ValidationError(str(exc)) from exc
        obj.pk = created.pk

    def save_formset(
        self, request: HttpRequest, form: forms.ModelForm[Flag], formset: Any, change: bool
    ) -> None:
        if formset.model is not FlagState:
            return super().save_formset(request, form, formset, change)
        reason = form.cleaned_data.get("reason", "")
        # The admin's change message reads what formset.save() would have recorded.
        formset.new_objects, formset.deleted_objects, formset.changed_objects = [], [], []
        for state_form in formset.forms:
            if not state_form.has_changed():
                continue
            state = state_form.instance
            changes = {field: state_form.cleaned_data[field] for field in state_form.changed_data}
            try:
                revision = services.flag_state_update(
                    flag=state.flag,
                    environment=state.environment,
                    actor=_actor(request),
                    reason=reason,
                    **changes,
                )
            except (services.InvalidDocumentError, ValidationError) as exc:
                messages.error(request, f"{state.environment}: {exc}")
                continue
            formset.changed_objects.append((state, state_form.changed_data))
            messages.success(
                request, f"{state.environment}: {state.flag} is now at revision r{revision.number}."
            )
        return None


@admin.register(FlagState)
class FlagStateAdmin(NoAddDeleteMixin, admin.ModelAdmin[FlagState]):
    list_display = ("flag", "environment", "enabled", "percentage", "value", "updated_at")
    list_filter = ("environment", "enabled")
    search_fields = ("flag__key",)
    actions = ["kill"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # edit states on the flag's page, where each change makes a revision

    def get_queryset(self, request: HttpRequest) -> QuerySet[FlagState]:
        return super().get_queryset(request).select_related("flag", "environment")

    @admin.action(description=_("Kill switch: turn off in that environment"), permissions=["kill"])
    def kill(self, request: HttpRequest, queryset: QuerySet[FlagState]) -> None:
        states = list(queryset.filter(enabled=True).select_related("flag", "environment"))
        for state in states:
            services.flag_kill(flag=state.flag, environment=state.environment, actor=_actor(request))
        self.message_user(
            request, ngettext("%d flag turned off.", "%d flags turned off.", len(states)) % len(states)
        )

    def has_kill_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(CHANGE_PERMISSION)


@admin.register(Revision)
class RevisionAdmin(NoAddDeleteMixin, admin.ModelAdmin[Revision]):
    list_display = (
        "environment",
        "number",
        "created_by",
        "reason",
        "rolled_back_to",
        "changes",
        "created_at",
    )
    list_filter = ("environment", "created_by")
    list_select_related = ("environment",)
    search_fields = ("reason", "created_by")
    readonly_fields = (
        "environment",
        "number",
        "created_by",
        "created_at",
        "reason",
        "rolled_back_to",
        "etag",
        "diff_table",
    )
    fields = readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("changes"))
    def changes(self, obj: Revision) -> int:
        return len(obj.diff)

    @admin.display(description=_("diff against the previous revision"))
    def diff_table(self, obj: Revision) -> str:
        if not obj.diff:
            return "no change"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td><del>{}</del></td><td><ins>{}</ins></td></tr>",
            ((c["flag"], c["field"], json.dumps(c["before"]), json.dumps(c["after"])) for c in obj.diff),
        )
        return format_html(
            '<table class="revision-diff"><tr><th>flag</th><th>field</th><th>before</th><th>after</th></tr>{}</table>',
            rows,
        )

    def get_urls(self) -> list[Any]:
        urls = super().get_urls()
        extra = [
            path(
                "<int:pk>/rollback/",
                self.admin_site.admin_view(self.rollback_view),
                name="rollout_revision_rollback",
            )
        ]
        return extra + urls

    def rollback_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:rollout_revision_change", args=[pk]))
        if not request.user.has_perm(CHANGE_PERMISSION):
            raise PermissionDenied
        target = get_object_or_404(Revision.objects.select_related("environment"), pk=pk)
        revision = services.revision_rollback(
            environment=target.environment, number=target.number, actor=_actor(request)
        )
        self.message_user(
            request, f"{target.environment} rolled back to r{target.number} as r{revision.number}."
        )
        return HttpResponseRedirect(reverse("admin:rollout_revision_change", args=[revision.pk]))


class RolloutStepInline(admin.TabularInline[RolloutStep, RolloutPlan]):
    model = RolloutStep
    extra = 1
    fields = (
        "position",
        "environment",
        "percentage",
        "not_before",
        "min_soak_seconds",
        "applied_at",
        "revision_number",
    )
    readonly_fields = ("applied_at", "revision_number")


@admin.register(RolloutPlan)
class RolloutPlanAdmin(admin.ModelAdmin[RolloutPlan]):
    list_display = ("name", "flag", "status", "progress", "updated_at")
    list_filter = ("status",)
    list_select_related = ("flag",)
    readonly_fields = ("status", "baseline", "reason", "created_by", "created_at", "updated_at")
    inlines = [RolloutStepInline]
    actions = ["start", "pause", "resume", "abort"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None or obj.status == RolloutPlan.Status.DRAFT

    def save_model(
        self, request: HttpRequest, obj: RolloutPlan, form: forms.ModelForm[RolloutPlan], change: bool
    ) -> None:
        if not change:
            obj.created_by = _actor(request)
        super().save_model(request, obj, form, change)

    def get_queryset(self, request: HttpRequest) -> QuerySet[RolloutPlan]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                step_count=Count("steps"),
                steps_done=Count("steps", filter=Q(steps__applied_at__isnull=False)),
            )
        )

    @admin.display(description=_("progress"))
    def progress(self, obj: RolloutPlan) -> str:
        return f"{getattr(obj, 'steps_done', 0)}/{getattr(obj, 'step_count', 0)} steps"

    def _run(self, request: HttpRequest, queryset: QuerySet[RolloutPlan], operation: Any, verb: str) -> None:
        done = 0
        for plan in queryset:
            try:
                operation(plan=plan, actor=_actor(request))
                done += 1
            except services.PlanStateError as exc:
                self.message_user(request, f"{plan}: {exc}", messages.WARNING)
        self.message_user(
            request,
            ngettext("%(n)d plan %(verb)s.", "%(n)d plans %(verb)s.", done) % {"n": done, "verb": verb},
        )

    @admin.action(description=_("Start selected plans"), permissions=["change"])
    def start(self, request: HttpRequest, queryset: QuerySet[RolloutPlan]) -> None:
        self._run(request, queryset, services.plan_start, "started")

    @admin.action(description=_("Pause selected plans"), permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[RolloutPlan]) -> None:
        self._run(request, queryset, services.plan_pause, "paused")

    @admin.action(description=_("Resume selected plans"), permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[RolloutPlan]) -> None:
        self._run(request, queryset, services.plan_resume, "resumed")

    @admin.action(
        description=_("Abort selected plans (restore the revisions from before)"), permissions=["change"]
    )
    def abort(self, request: HttpRequest, queryset: QuerySet[RolloutPlan]) -> None:
        self._run(request, queryset, services.plan_abort, "aborted")
