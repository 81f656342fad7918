"""The operators' tool. Every change goes through rollout.services, so each one makes a new
revision, lands in the audit log and reaches SDKs after commit."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Exists, Max, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.module_loading import import_string
from django.utils.timezone import localtime
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from analemma_sdk.flags.spec import STATE_FIELDS
from keys.admin import OneTimeKeyAdmin

from . import services
from .admin_display import (
    Staleness,
    json_text,
    percent_text,
    plan_next_due,
    plan_timeline,
    split_legend,
    split_parts,
    split_svg,
    staleness,
    state_summary,
    value_text,
)
from .admin_forms import (
    FlagAdminForm,
    FlagStateForm,
    FlagStateFormSet,
    RolloutPlanForm,
    RolloutStepForm,
    RolloutStepFormSet,
    SwitchForm,
    changes_of,
    plan_editable,
    steps_of,
)
from .models import Environment, Flag, FlagState, Revision, RolloutPlan, RolloutStep, SdkKey
from .selectors import flag_history, flag_states_of, revision_latest
from .services.documents import flag_document
from .services.tags import flag_tags_set
from .webhooks import webhook_host

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


def _environments(request: HttpRequest) -> list[Environment]:
    """Every environment, in order, once per request (the flags list's columns and filters)."""
    cached: list[Environment] | None = getattr(request, "_rollout_environments", None)
    if cached is None:
        cached = list(Environment.objects.order_by("pk"))
        setattr(request, "_rollout_environments", cached)  # noqa: B010 (not an attribute of the type)
    return cached


def _telemetry(name: str) -> Any | None:
    """The telemetry function a setting names (ROLLOUT_FLAG_INSIGHTS, ROLLOUT_PLAN_INSIGHTS,
    ROLLOUT_FLAG_ACTIVITY), or None when it names none: the admin then works without it."""
    dotted = getattr(settings, name, "")
    return import_string(dotted) if dotted else None


def _stale_days() -> int:
    return max(1, int(getattr(settings, "ROLLOUT_STALE_DAYS", 30)))


def _flag_activity(flag_keys: list[str] | None) -> Any | None:
    """When each flag was last evaluated per environment (telemetry.activity.Activity), in one
    query; None without telemetry."""
    read = _telemetry("ROLLOUT_FLAG_ACTIVITY")
    return read(flag_keys) if read is not None else None


def _state_staleness(
    state: FlagState, flag: Flag, environment: Environment, activity: Any | None, now: Any
) -> list[Staleness]:
    return staleness(
        state,
        flag,
        now=now,
        days=_stale_days(),
        last_evaluated=activity.last(flag.key, environment.key) if activity is not None else None,
        reporting_since=activity.reporting_since.get(environment.key) if activity is not None else None,
        telemetry=activity is not None,
    )


def _back(request: HttpRequest, default: str) -> str:
    """Where a POST returns to: the page it came from (``next``) when it is one of ours."""
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if wanted and url_has_allowed_host_and_scheme(
        wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return wanted
    return default


class EnvironmentStateFilter(admin.SimpleListFilter):
    title = _("state in an environment")
    parameter_name = "state"
    MODES = (
        ("on", "on for everyone"),
        ("ramping", "percentage rollout"),
        ("variants", "A/B variants"),
        ("off", "off"),
    )

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (f"{environment.key}:{mode}", f"{environment.key}: {label}")
            for environment in _environments(request)
            for mode, label in self.MODES
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Flag]) -> QuerySet[Flag]:
        environment_key, _sep, mode = (self.value() or "").rpartition(":")
        states = FlagState.objects.filter(flag=OuterRef("pk"), environment__key=environment_key)
        if mode == "off":
            states = states.filter(enabled=False)
        elif mode == "variants":
            states = states.filter(enabled=True).exclude(variants=[])
        elif mode == "on":
            states = states.filter(enabled=True, variants=[], percentage__gte=100)
        elif mode == "ramping":
            states = states.filter(enabled=True, variants=[], percentage__lt=100)
        else:
            return queryset
        return queryset.filter(Exists(states))


class TagFilter(admin.SimpleListFilter):
    title = _("tag")
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        tags: set[str] = set()
        for text in Flag.objects.exclude(tags="").order_by().values_list("tags", flat=True).distinct():
            tags.update(text.split())
        return [(tag, tag) for tag in sorted(tags)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Flag]) -> QuerySet[Flag]:
        tag = self.value()
        if not tag:
            return queryset
        # Tags are stored as words separated by single spaces (services.tags.tags_normalise).
        return queryset.filter(
            Q(tags=tag)
            | Q(tags__startswith=f"{tag} ")
            | Q(tags__endswith=f" {tag}")
            | Q(tags__contains=f" {tag} ")
        )


class FlagStateInline(admin.StackedInline[FlagState, Flag]):
    """A flag's state in every environment: one tab each, with structured editors (the
    template and rollout/static/rollout/flag_editor.js) over the same fields a raw post sends."""

    model = FlagState
    form = FlagStateForm
    formset = FlagStateFormSet
    template = "admin/rollout/flag/states_tabs.html"
    extra = 0
    can_delete = False
    fields = ("enabled", "value", "percentage", "variants", "targets", "rules", "bucket_by", "salt", "seed")

    def get_queryset(self, request: HttpRequest) -> QuerySet[FlagState]:
        return super().get_queryset(request).select_related("environment").order_by("environment_id")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin[Flag]):
    show_facets = admin.ShowFacets.NEVER  # facet counts scan whole tables
    form = FlagAdminForm
    search_fields = ("key", "description", "owner", "tags")
    search_help_text = _("Key, description, owner or tag")
    list_filter = (EnvironmentStateFilter, "kind", "owner", TagFilter)
    list_per_page = 50
    list_max_show_all = 500
    show_full_result_count = False  # one COUNT fewer at 10,000 flags
    inlines = [FlagStateInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Flag]:
        states = FlagState.objects.order_by("environment_id")
        # A subquery, not a join and GROUP BY: it runs for the rows on the page only, and the
        # page's COUNT leaves it out.
        latest = (
            FlagState.objects.filter(flag=OuterRef("pk")).order_by("-updated_at").values("updated_at")[:1]
        )
        return (
            super()
            .get_queryset(request)
            .annotate(last_change=Subquery(latest))
            .prefetch_related(Prefetch("states", queryset=states))
        )

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        # The page's flags' activity, once: the cells mark the stale ones from it.
        activity = _flag_activity([flag.key for flag in changelist.result_list])
        setattr(request, "_rollout_activity", activity)  # noqa: B010 (not an attribute of the type)
        return changelist

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {"stale_days": _stale_days(), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    def get_list_display(self, request: HttpRequest) -> Any:
        columns = [self._environment_column(request, environment) for environment in _environments(request)]
        return ("key", "kind", *columns, "owner", "tag_list_display", "last_change_display")

    def _environment_column(self, request: HttpRequest, environment: Environment) -> Any:
        can_switch = request.user.has_perm(CHANGE_PERMISSION)

        @admin.display(description=environment.key)
        def cell(flag: Flag) -> str:
            state = next((s for s in flag.states.all() if s.environment_id == environment.pk), None)
            if state is None:
                return "—"
            summary = state_summary(state, flag)
            stale = _state_staleness(
                state, flag, environment, getattr(request, "_rollout_activity", None), timezone.now()
            )
            mark = (
                format_html(
                    '<span class="stale-mark" title="{}">stale</span>',
                    "; ".join(
                        f"{s.reason} (since {date_format(localtime(s.since), 'Y-m-d')})" for s in stale
                    ),
                )
                if stale
                else ""
            )
            button = ""
            if can_switch:
                to, label = ("off", "Kill") if state.enabled else ("on", "Turn on")
                button = format_html(
                    '<button type="button" class="flag-switch switch-{}" data-flag="{}" data-flag-key="{}" '
                    'data-environment="{}" data-environment-key="{}" data-to="{}" '
                    'title="{} {} in {} (asks for a reason)">{}</button>',
                    to,
                    flag.pk,
                    flag.key,
                    environment.pk,
                    environment.key,
                    to,
                    label,
                    flag.key,
                    environment.key,
                    label,
                )
            return format_html(
                '<span class="state-cell" data-environment-key="{}"><span class="state-badge {}" title="{}">{}</span>{}{}</span>',
                environment.key,
                summary.css,
                summary.detail,
                summary.label,
                mark,
                button,
            )

        cell.__name__ = f"environment_{environment.key.replace('-', '_').replace('.', '_')}"
        return cell

    @admin.display(description=_("tags"))
    def tag_list_display(self, flag: Flag) -> str:
        return format_html_join(" ", '<span class="tag">{}</span>', ((tag,) for tag in flag.tag_list))

    @admin.display(description=_("last change"), ordering="last_change")
    def last_change_display(self, flag: Flag) -> Any:
        changed = getattr(flag, "last_change", None)
        return date_format(localtime(changed), "Y-m-d H:i") if changed else "—"

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        # The reason is asked for beside the save buttons (change_form.html), below the states.
        shown = "default_display" if obj else "default_value"
        return [(None, {"fields": (("key", "kind", shown), "description", ("owner", "tags"))})]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("key", "kind", "default_display") if obj else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("default value"))
    def default_display(self, flag: Flag) -> str:
        return format_html('<code class="flag-value">{}</code>', value_text(flag.kind, flag.default_value))

    def get_urls(self) -> list[Any]:
        switch = path("switch/", self.admin_site.admin_view(self.switch_view), name="rollout_flag_switch")
        stale = path("stale/", self.admin_site.admin_view(self.stale_view), name="rollout_flag_stale")
        return [switch, stale, *super().get_urls()]

    def stale_view(self, request: HttpRequest) -> HttpResponse:
        """Cleanup candidates: every (flag, environment) that has served one value to everyone,
        or gone unevaluated, for ROLLOUT_STALE_DAYS, oldest first. Three queries whatever the
        number of flags: the states with their flags and environments, and the activity."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        activity = _flag_activity(None)
        states = FlagState.objects.select_related("flag", "environment").order_by(
            "flag__key", "environment_id"
        )
        candidates: list[dict[str, Any]] = [
            {"state": state, "staleness": found}
            for state in states
            for found in _state_staleness(state, state.flag, state.environment, activity, now)
        ]
        candidates.sort(key=lambda c: (c["staleness"].since, c["state"].flag.key, c["state"].environment_id))
        paginator = Paginator(candidates, 200)
        page = paginator.get_page(request.GET.get("p"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Stale and dead flags: cleanup candidates",
            "page_obj": page,
            "candidates": page.object_list,
            "count": len(candidates),
            "stale_days": _stale_days(),
            "telemetry_installed": activity is not None,
        }
        return TemplateResponse(request, "admin/rollout/flag/stale.html", context)

    def switch_view(self, request: HttpRequest) -> HttpResponse:
        """The flags list's kill switch and on switch: one flag in one environment, with the
        reason the operator gave, as a new revision."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(CHANGE_PERMISSION):
            raise PermissionDenied
        back = _back(request, reverse("admin:rollout_flag_changelist"))
        form = SwitchForm(request.POST)
        if not form.is_valid():
            problem = "give a reason" if "reason" in form.errors else "choose a flag and an environment"
            self.message_user(request, f"Nothing changed: {problem}.", messages.ERROR)
            return HttpResponseRedirect(back)
        data = form.cleaned_data
        state = get_object_or_404(
            FlagState.objects.select_related("flag", "environment"),
            flag_id=data["flag"],
            environment_id=data["environment"],
        )
        flag, environment, on = state.flag, state.environment, data["to"] == "on"
        if state.enabled == on:
            self.message_user(request, f"{flag} is already {data['to']} in {environment}.", messages.WARNING)
            return HttpResponseRedirect(back)
        try:
            if on:
                revision = services.flag_state_update(
                    flag=flag,
                    environment=environment,
                    actor=_actor(request),
                    reason=data["reason"],
                    enabled=True,
                )
            else:
                revision = services.flag_kill(
                    flag=flag, environment=environment, actor=_actor(request), reason=data["reason"]
                )
        except (services.InvalidDocumentError, ValidationError) as exc:
            self.message_user(request, f"Nothing changed: {exc}", messages.ERROR)
            return HttpResponseRedirect(back)
        self.message_user(request, f"Switched {data['to']}: {flag} in {environment}, as r{revision.number}.")
        return HttpResponseRedirect(back)

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
            self._describe_states(request, context, obj)
            self._insights(request, context, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _describe_states(self, request: HttpRequest, context: dict[str, Any], flag: Flag) -> None:
        """What each environment's tab shows beside its editors: the state at a glance, the
        split it serves, the JSON SDKs are served, and the flag's history there."""
        history: dict[int, list[dict[str, Any]]] = {}
        page = reverse("admin:rollout_flag_change", args=[flag.pk])
        for version, revision in flag_history(flag_key=flag.key):
            history.setdefault(version.environment_id, []).append(
                {
                    "revision": revision,
                    "current": version.until is None,
                    "changes": [
                        {
                            "field": c["field"],
                            "before": json_text(c["before"]),
                            "after": json_text(c["after"]),
                        }
                        for c in revision.diff
                        if c.get("flag") == flag.key
                    ],
                    "rollback_url": reverse("admin:rollout_revision_rollback", args=[revision.pk])
                    + "?"
                    + urlencode({"flag": flag.key, "next": page}),
                }
            )
        for inline_formset in context.get("inline_admin_formsets", []):
            if inline_formset.formset.model is not FlagState:
                continue
            for state_form in inline_formset.formset.forms:
                # As saved, not as a refused post left the form's instance.
                state = FlagState(
                    flag=flag,
                    environment=state_form.instance.environment,
                    **{name: state_form.initial.get(name) for name in STATE_FIELDS},
                )
                parts = split_parts(state, flag)
                state_form.panel = {
                    "environment": state.environment,
                    "summary": state_summary(state, flag),
                    "split": split_svg(parts),
                    "legend": split_legend(parts),
                    "served": json.dumps(flag_document(state), indent=2, sort_keys=True),
                    "history": history.get(state.environment_id, []),
                }
        context["flag_kind"] = flag.kind
        context["flag_default_text"] = value_text(flag.kind, flag.default_value)

    def _insights(self, request: HttpRequest, context: dict[str, Any], flag: Flag) -> None:
        """Telemetry per environment tab (ROLLOUT_FLAG_INSIGHTS): last evaluated, exposures over
        the chosen window, the cohort comparison; the tab says so when telemetry is absent."""
        read = _telemetry("ROLLOUT_FLAG_INSIGHTS")
        context["telemetry_installed"] = read is not None
        if read is None:
            return
        environments = [environment.key for environment in _environments(request)]
        insights = read(flag, environments, window=request.GET.get("window"), now=timezone.now())
        context["insights"] = insights
        for inline_formset in context.get("inline_admin_formsets", []):
            if inline_formset.formset.model is not FlagState:
                continue
            for state_form in inline_formset.formset.forms:
                panel = getattr(state_form, "panel", None)
                if panel is not None:
                    panel["insights"] = insights.by_environment.get(panel["environment"].key)

    def save_model(self, request: HttpRequest, obj: Flag, form: forms.ModelForm[Flag], change: bool) -> None:
        tags = form.cleaned_data.get("tags", "")
        if change:
            services.flag_details_update(
                flag=obj, actor=_actor(request), description=obj.description, owner=obj.owner
            )
            flag_tags_set(flag=obj, tags=tags, actor=_actor(request))
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
        if tags:
            flag_tags_set(flag=created, tags=tags, actor=_actor(request))
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
            # Checked in FlagStateFormSet.clean, with everything else on the page, before any save.
            revision = services.flag_state_update(
                flag=state.flag,
                environment=state.environment,
                actor=_actor(request),
                reason=reason,
                **changes_of(state_form),
            )
            formset.changed_objects.append((state, state_form.changed_data))
            messages.success(
                request, f"{state.environment}: {state.flag} is now at revision r{revision.number}."
            )
        return None


@admin.register(FlagState)
class FlagStateAdmin(NoAddDeleteMixin, admin.ModelAdmin[FlagState]):
    show_facets = admin.ShowFacets.NEVER  # facet counts scan whole tables
    list_display = ("flag", "environment", "enabled", "state", "served_value", "updated_at")
    list_filter = ("environment", "enabled")
    search_fields = ("flag__key",)
    actions = ["kill"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # edit states on the flag's page, where each change makes a revision

    def get_queryset(self, request: HttpRequest) -> QuerySet[FlagState]:
        return super().get_queryset(request).select_related("flag", "environment")

    @admin.display(description=_("state"))
    def state(self, obj: FlagState) -> str:
        summary = state_summary(obj, obj.flag)
        return format_html(
            '<span class="state-badge {}" title="{}">{}</span>', summary.css, summary.detail, summary.label
        )

    @admin.display(description=_("value"))
    def served_value(self, obj: FlagState) -> str:
        return format_html('<code class="flag-value">{}</code>', value_text(obj.flag.kind, obj.value))

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
    show_facets = admin.ShowFacets.NEVER  # facet counts scan whole tables
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
        back = _back(request, reverse("admin:rollout_revision_change", args=[target.pk]))
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
                return self._apply_rollback(request, target, flag_key, what, back)
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
            "next": back if back != reverse("admin:rollout_revision_change", args=[target.pk]) else "",
        }
        return TemplateResponse(request, "admin/rollout/revision/rollback_confirm.html", context)

    def _apply_rollback(
        self, request: HttpRequest, target: Revision, flag_key: str | None, what: str, back: str
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
            return HttpResponseRedirect(back)
        self.message_user(request, f"{what} rolled back to r{target.number} as r{revision.number}.")
        # Back where the operator came from (the flag's page), else to the new revision.
        if request.POST.get("next") and back == request.POST["next"]:
            return HttpResponseRedirect(back)
        return HttpResponseRedirect(reverse("admin:rollout_revision_change", args=[revision.pk]))


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
        "guards",
        "applied_at",
        "revision_number",
    )
    readonly_fields = ("applied_at", "revision_number")
    form = RolloutStepForm

    def get_queryset(self, request: HttpRequest) -> QuerySet[RolloutStep]:
        return super().get_queryset(request).select_related("environment")

    def get_extra(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> int:
        return 1 if plan_editable(obj) else 0

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return plan_editable(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return plan_editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return plan_editable(obj) and super().has_delete_permission(request, obj)


# What each button on a plan's page may do, in which states, and who may press it.
PLAN_OPERATIONS: dict[str, tuple[Any, str, tuple[str, ...], str]] = {
    "start": (services.plan_start, "started", (RolloutPlan.Status.DRAFT,), "run"),
    "pause": (services.plan_pause, "paused", (RolloutPlan.Status.RUNNING,), "change"),
    "resume": (services.plan_resume, "resumed", (RolloutPlan.Status.PAUSED,), "run"),
    "abort": (
        services.plan_abort,
        "aborted",
        (RolloutPlan.Status.RUNNING, RolloutPlan.Status.PAUSED, RolloutPlan.Status.FAILED),
        "run",
    ),
}


def _guard_verdicts(plan: RolloutPlan, step: RolloutStep | None) -> list[dict[str, Any]]:
    """What each guard in settings.ROLLOUT_GUARDS says of the plan's next step now (the
    question the periodic advance asks before it applies it). A guard that raises is shown
    with its error rather than breaking the page."""
    verdicts = []
    for dotted in getattr(settings, "ROLLOUT_GUARDS", []):
        if step is None:
            verdicts.append({"guard": dotted, "ok": None, "reason": "no step left to guard"})
            continue
        try:
            verdict = import_string(dotted)(plan, step)
            if not verdict.ok and getattr(verdict, "wait", False):  # neither lets go nor aborts
                verdicts.append({"guard": dotted, "ok": None, "reason": f"waits: {verdict.reason}"})
                continue
            verdicts.append({"guard": dotted, "ok": verdict.ok, "reason": verdict.reason})
        except Exception as exc:  # a guard is operator-supplied code
            verdicts.append({"guard": dotted, "ok": None, "reason": f"{type(exc).__name__}: {exc}"})
    return verdicts


@admin.register(RolloutPlan)
class RolloutPlanAdmin(admin.ModelAdmin[RolloutPlan]):
    show_facets = admin.ShowFacets.NEVER  # facet counts scan whole tables
    form = RolloutPlanForm
    list_display = (
        "name",
        "flag",
        "status",
        "progress",
        "current_step",
        "next_step_at",
        "started_by",
        "updated_at",
    )
    list_filter = ("status",)
    list_select_related = ("flag", "started_by")
    autocomplete_fields = ("flag",)  # a search, not a menu of 10,000 flags
    inlines = [RolloutStepInline]
    actions = ["start", "pause", "resume", "abort"]

    # Shown on every plan, never edited here (the plan's actions and services set them).
    recorded_fields = (
        "status",
        "reason",
        "guard_notifications",
        "baseline",
        "started_by",
        "created_by",
        "created_at",
        "updated_at",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        always = self.recorded_fields
        return always if plan_editable(obj) else ("flag", "value_display", *always)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        value = "value" if plan_editable(obj) else "value_display"
        return ("name", "flag", value, *self.recorded_fields)

    @admin.display(description=_("guard notifications"))
    def guard_notifications(self, plan: RolloutPlan) -> str:
        host = webhook_host()
        if not host:
            return "No webhook configured (ROLLOUT_WEBHOOK_URL): a guard's abort is only audited."
        return f"A guard's abort is posted to the webhook at {host} (ROLLOUT_WEBHOOK_URL)."

    @admin.display(description=_("value"))
    def value_display(self, plan: RolloutPlan) -> str:
        return format_html('<code class="flag-value">{}</code>', value_text(plan.flag.kind, plan.value))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return plan_editable(obj) and super().has_delete_permission(request, obj)

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
                steps = steps_of(formset)
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
        frozen = (
            {} if not plan_editable(plan) else {"flag": data["flag"], "value": data["value"], "steps": steps}
        )
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
        steps = RolloutStep.objects.select_related("environment").order_by("position")
        return super().get_queryset(request).prefetch_related(Prefetch("steps", queryset=steps))

    @admin.display(description=_("progress"))
    def progress(self, obj: RolloutPlan) -> str:
        steps = list(obj.steps.all())
        done = sum(1 for s in steps if s.applied_at is not None)
        return f"{done}/{len(steps)} steps"

    @admin.display(description=_("current step"))
    def current_step(self, obj: RolloutPlan) -> str:
        applied = [s for s in obj.steps.all() if s.applied_at is not None]
        if not applied:
            return "—"
        step = applied[-1]
        return f"{step.position}: {step.environment} {percent_text(step.percentage)} %"

    @admin.display(description=_("next step at"))
    def next_step_at(self, obj: RolloutPlan) -> str:
        due, what = plan_next_due(obj, list(obj.steps.all()), timezone.now())
        return f"{date_format(localtime(due), 'Y-m-d H:i')}: {what}" if due else "—"

    def get_urls(self) -> list[Any]:
        operate = path(
            "<int:pk>/operate/",
            self.admin_site.admin_view(self.operate_view),
            name="rollout_rolloutplan_operate",
        )
        return [operate, *super().get_urls()]

    def operate_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The Start / Pause / Resume / Abort buttons of a plan's page: the same services,
        and the same rights, as the list's actions."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        plan = get_object_or_404(RolloutPlan, pk=pk)
        page = reverse("admin:rollout_rolloutplan_change", args=[plan.pk])
        operation = PLAN_OPERATIONS.get(request.POST.get("operation", ""))
        if operation is None:
            self.message_user(request, "Choose start, pause, resume or abort.", messages.ERROR)
            return HttpResponseRedirect(page)
        run, verb, _states, right = operation
        allowed = (
            self.has_run_permission(request) if right == "run" else self.has_change_permission(request, plan)
        )
        if not allowed:
            raise PermissionDenied
        kwargs: dict[str, Any] = {"plan": plan, "user": request.user, "actor": _actor(request)}
        if run is services.plan_abort:
            kwargs["reason"] = request.POST.get("reason", "").strip()[:1000] or "aborted from the plan's page"
        try:
            result = run(**kwargs)
        except (services.PlanStateError, services.InvalidPlanError, PermissionDenied) as exc:
            self.message_user(request, f"{plan}: {exc}", messages.WARNING)
            return HttpResponseRedirect(page)
        if result.status == RolloutPlan.Status.FAILED:
            self.message_user(request, f"{plan}: failed: {result.reason}", messages.ERROR)
        else:
            self.message_user(request, f"{plan} {verb}.")
        return HttpResponseRedirect(page)

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
            steps = list(obj.steps.select_related("environment").order_by("position"))
            due, what = plan_next_due(obj, steps, timezone.now())
            upcoming = next((s for s in steps if s.applied_at is None), None)
            can_run = self.has_run_permission(request)
            context.update(
                {
                    "timeline": plan_timeline(obj, steps),
                    "next_due": due,
                    "next_what": what,
                    "guards_configured": bool(getattr(settings, "ROLLOUT_GUARDS", [])),
                    "guard_verdicts": _guard_verdicts(obj, upcoming)
                    if obj.status in (RolloutPlan.Status.RUNNING, RolloutPlan.Status.PAUSED)
                    else [],
                    "operations": [
                        name
                        for name, (_run, _verb, states, right) in PLAN_OPERATIONS.items()
                        if obj.status in states
                        and (can_run if right == "run" else self.has_change_permission(request, obj))
                    ],
                    "plan_value_text": value_text(obj.flag.kind, obj.value),
                }
            )
            read = _telemetry("ROLLOUT_PLAN_INSIGHTS")
            context["telemetry_installed"] = read is not None
            if read is not None:
                context["insights"] = read(obj, steps, window=request.GET.get("window"), now=timezone.now())
        return super().render_change_form(request, context, add, change, form_url, obj)

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
