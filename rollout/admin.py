"""The operators' tool. Every change goes through rollout.services, so each one makes a new
revision, lands in the audit log and reaches SDKs after commit."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Max, Prefetch, Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from keys.admin import OneTimeKeyAdmin

from . import services
from .json_input import FiniteJSONField
from .models import Environment, Flag, FlagState, Revision, RolloutPlan, RolloutStep, SdkKey
from .selectors import flag_states_of, revision_latest

CHANGE_PERMISSION = services.FLAG_CHANGE_PERMISSION


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
        field_classes = {name: FiniteJSONField for name in ("value", "variants", "targets", "rules")}


class FlagStateFormSet(BaseInlineFormSet[FlagState, Flag, forms.ModelForm[FlagState]]):
    """Every changed state is checked by the service that will save it before any is saved:
    a refused change is an error on its environment's form, and nothing on the page is saved."""

    def clean(self) -> None:
        super().clean()
        for state_form in self.forms:
            if not state_form.has_changed() or not state_form.is_valid():
                continue
            state = state_form.instance
            changes = {field: state_form.cleaned_data[field] for field in state_form.changed_data}
            try:
                services.flag_state_check(flag=state.flag, environment=state.environment, **changes)
            except (services.InvalidDocumentError, ValidationError) as exc:
                message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                state_form.add_error(None, f"{state.environment}: {message}")


class FlagStateInline(admin.StackedInline[FlagState, Flag]):
    model = FlagState
    form = FlagStateForm
    formset = FlagStateFormSet
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
        field_classes = {"default_value": FiniteJSONField}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.instance._state.adding and {"key", "kind", "default_value"} <= set(cleaned):
            try:
                services.flag_definition_check(
                    key=cleaned["key"], kind=cleaned["kind"], default_value=cleaned["default_value"]
                )
            except services.InvalidFlagError as exc:
                self.add_error("default_value", str(exc))
        return cleaned


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
        # The form checked the definition with the service's own check.
        created = services.flag_create(
            key=obj.key,
            kind=obj.kind,
            default_value=obj.default_value,
            description=obj.description,
            owner=obj.owner,
            actor=_actor(request),
        )
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
            # Checked in FlagStateFormSet.clean, with everything else on the page, before any save.
            revision = services.flag_state_update(
                flag=state.flag,
                environment=state.environment,
                actor=_actor(request),
                reason=reason,
                **changes,
            )
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
            ),
            path(
                "<int:pk>/restore/",
                self.admin_site.admin_view(self.restore_view),
                name="rollout_revision_restore",
            ),
        ]
        return extra + urls

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if obj is not None:
            context["rollback_flags"] = [
                state.flag.key for state in flag_states_of(environment=obj.environment)
            ]
            # The flag this revision changed comes first to mind.
            context["rollback_selected"] = obj.diff[0]["flag"] if obj.diff else ""
        return super().render_change_form(request, context, add, change, form_url, obj)

    def rollback_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """One flag back to its state in this revision: a preview, then the confirmation."""
        return self._rollback(request, pk, whole_environment=False)

    def restore_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The whole environment back to this revision: a preview, then the confirmation."""
        return self._rollback(request, pk, whole_environment=True)

    def _rollback(self, request: HttpRequest, pk: int, *, whole_environment: bool) -> HttpResponse:
        if not request.user.has_perm(CHANGE_PERMISSION):
            raise PermissionDenied
        target = get_object_or_404(Revision.objects.select_related("environment"), pk=pk)
        environment = target.environment
        back = reverse("admin:rollout_revision_change", args=[target.pk])
        flag_key = None
        if not whole_environment:
            flag_key = (request.POST if request.method == "POST" else request.GET).get("flag", "")
            if not flag_states_of(environment=environment).filter(flag__key=flag_key).exists():
                self.message_user(request, f"Choose a flag of {environment} to roll back.", messages.ERROR)
                return HttpResponseRedirect(back)
        latest = revision_latest(environment=environment)
        assert latest is not None  # the target exists
        preview = services.rollback_preview(environment=environment, number=target.number, flag_key=flag_key)
        what = f"{flag_key} in {environment}" if flag_key else f"every flag of {environment}"
        if request.method == "POST" and preview:
            if request.POST.get("latest") == str(latest.number):
                return self._apply_rollback(request, target, flag_key, what)
            self.message_user(
                request,
                f"{environment} changed since that preview (now r{latest.number}): check the changes again.",
                messages.WARNING,
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Roll {what} back to r{target.number}",
            "target": target,
            "flag_key": flag_key,
            "latest": latest,
            "preview": [
                {**change, "before": json.dumps(change["before"]), "after": json.dumps(change["after"])}
                for change in preview
            ],
            "back": back,
        }
        return TemplateResponse(request, "admin/rollout/revision/rollback_confirm.html", context)

    def _apply_rollback(
        self, request: HttpRequest, target: Revision, flag_key: str | None, what: str
    ) -> HttpResponse:
        reason = request.POST.get("reason", "")[:1000]
        try:
            if flag_key is not None:
                revision = services.flag_rollback(
                    environment=target.environment,
                    flag_key=flag_key,
                    number=target.number,
                    actor=_actor(request),
                    reason=reason,
                )
            else:
                revision = services.revision_rollback(
                    environment=target.environment, number=target.number, actor=_actor(request), reason=reason
                )
        except (services.InvalidDocumentError, services.UnknownRevision) as exc:
            # e.g. a value stored before the SDK's bounds applied: nothing was changed.
            self.message_user(request, f"Not rolled back: {exc}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:rollout_revision_change", args=[target.pk]))
        self.message_user(request, f"{what} rolled back to r{target.number} as r{revision.number}.")
        return HttpResponseRedirect(reverse("admin:rollout_revision_change", args=[revision.pk]))


class RolloutPlanForm(forms.ModelForm[RolloutPlan]):
    class Meta:
        model = RolloutPlan
        fields = ("name", "flag", "value")
        field_classes = {"value": FiniteJSONField}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        flag = cleaned.get("flag", self.instance.flag if self.instance.flag_id else None)
        if "value" in self.fields and flag is not None and "value" not in self.errors:
            try:
                services.plan_check_value(flag=flag, value=cleaned.get("value"))
            except services.InvalidPlanError as exc:
                self.add_error("value", str(exc))
        return cleaned


def _editable(obj: RolloutPlan | None) -> bool:
    """Only a draft's definition can change: a started plan's steps and value are frozen."""
    return obj is None or obj.status == RolloutPlan.Status.DRAFT


def _steps(formset: Any) -> list[dict[str, Any]]:
    """The steps a plan's step formset describes, in the order of their forms."""
    steps = []
    for step_form in formset.forms:
        data = getattr(step_form, "cleaned_data", None)
        if not data or (formset.can_delete and formset._should_delete_form(step_form)):
            continue
        if step_form.instance.pk is None and not step_form.has_changed():
            continue  # the empty extra row
        steps.append({field: data.get(field) for field in ("position", *services.plans.STEP_FIELDS)})
    return steps


class RolloutStepFormSet(BaseInlineFormSet[RolloutStep, RolloutPlan, forms.ModelForm[RolloutStep]]):
    """The steps as the service will take them, checked by it before anything is saved."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors) or not _editable(None if self.instance._state.adding else self.instance):
            return  # a started plan's steps are shown, not posted
        try:
            services.plan_check_steps(steps=_steps(self))
        except services.InvalidPlanError as exc:
            raise ValidationError(str(exc)) from None


class RolloutStepInline(admin.TabularInline[RolloutStep, RolloutPlan]):
    model = RolloutStep
    formset = RolloutStepFormSet
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

    def get_extra(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> int:
        return 1 if _editable(obj) else 0

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_delete_permission(request, obj)


@admin.register(RolloutPlan)
class RolloutPlanAdmin(admin.ModelAdmin[RolloutPlan]):
    form = RolloutPlanForm
    list_display = ("name", "flag", "status", "progress", "started_by", "updated_at")
    list_filter = ("status",)
    list_select_related = ("flag", "started_by")
    inlines = [RolloutStepInline]
    actions = ["start", "pause", "resume", "abort"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        always = ("status", "reason", "baseline", "started_by", "created_by", "created_at", "updated_at")
        return always if _editable(obj) else ("flag", "value", *always)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_delete_permission(request, obj)

    def save_model(
        self, request: HttpRequest, obj: RolloutPlan, form: forms.ModelForm[RolloutPlan], change: bool
    ) -> None:
        pass  # save_related saves the plan and its steps in one service call

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        plan, data = form.instance, form.cleaned_data
        steps = None
        for formset in formsets:
            formset.new_objects, formset.deleted_objects, formset.changed_objects = [], [], []
            if formset.model is RolloutStep and (not change or formset.has_changed()):
                steps = _steps(formset)
        if not change:
            created = services.plan_create(
                name=data["name"],
                flag=data["flag"],
                value=data["value"],
                steps=steps or [],
                actor=_actor(request),
            )
            plan.pk, plan.created_by = created.pk, created.created_by
            return
        frozen = {} if not _editable(plan) else {"flag": data["flag"], "value": data["value"], "steps": steps}
        services.plan_update(plan=plan, actor=_actor(request), name=data["name"], **frozen)

    def delete_model(self, request: HttpRequest, obj: RolloutPlan) -> None:
        services.plan_delete(plan=obj, actor=_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[RolloutPlan]) -> None:
        for plan in queryset:
            try:
                services.plan_delete(plan=plan, actor=_actor(request))
            except services.PlanStateError as exc:
                self.message_user(request, f"{plan}: {exc}", messages.WARNING)

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
                result = operation(plan=plan, user=request.user, actor=_actor(request))
            except (services.PlanStateError, services.InvalidPlanError, PermissionDenied) as exc:
                self.message_user(request, f"{plan}: {exc}", messages.WARNING)
                continue
            if result.status == RolloutPlan.Status.FAILED:
                self.message_user(request, f"{plan}: failed: {result.reason}", messages.ERROR)
                continue
            done += 1
        self.message_user(
            request,
            ngettext("%(n)d plan %(verb)s.", "%(n)d plans %(verb)s.", done) % {"n": done, "verb": verb},
        )

    def has_run_permission(self, request: HttpRequest) -> bool:
        """Starting, resuming and aborting change flags: the flag-change right is needed too."""
        return self.has_change_permission(request) and services.flag_change_allowed(user=request.user)

    @admin.action(description=_("Start selected plans"), permissions=["run"])
    def start(self, request: HttpRequest, queryset: QuerySet[RolloutPlan]) -> None:
        self._run(request, queryset, services.plan_start, "started")

    @admin.action(description=_("Pause selected plans"), permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[RolloutPlan]) -> None:
        self._run(request, queryset, services.plan_pause, "paused")

    @admin.action(description=_("Resume selected plans (they then act for you)"), permissions=["run"])
    def resume(self, request: HttpRequest, queryset: QuerySet[RolloutPlan]) -> None:
        self._run(request, queryset, services.plan_resume, "resumed")

    @admin.action(
        description=_("Abort selected plans (restore their flag as it was before)"), permissions=["run"]
    )
    def abort(self, request: HttpRequest, queryset: QuerySet[RolloutPlan]) -> None:
        self._run(request, queryset, services.plan_abort, "aborted")
