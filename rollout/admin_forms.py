"""The rollout admin's forms. Values are typed by the flag's kind (a string without quotes, a
boolean chosen, a number as a number, JSON as JSON); every change is checked by the service
that will save it before anything on the page is saved."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet

from analemma_sdk.bucketing import TOTAL_WEIGHT

from . import services
from .admin_display import percent_text
from .json_input import FiniteJSONField, json_loads_finite, json_problem
from .models import Flag, FlagState, RolloutPlan, RolloutStep
from .services.tags import tags_normalise

BOOLEAN_CHOICES = (("true", "true"), ("false", "false"))


class _AsTyped(str):
    """Text an operator posted: shown back exactly as typed, never re-encoded."""


class TypedValueField(forms.Field):
    """A value a flag of ``kind`` serves, as an operator types it: a string flag's value as
    plain text, a boolean chosen from true/false, a number as a number, JSON as JSON text.
    Empty means no value: an SDK then serves true for a boolean flag, the default otherwise."""

    def __init__(self, *, kind: str, **kwargs: Any) -> None:
        self.kind = kind
        kwargs.setdefault("required", False)
        if kind == Flag.Kind.BOOLEAN:
            kwargs.setdefault("widget", forms.Select(choices=(("", "— (empty: true)"), *BOOLEAN_CHOICES)))
        elif kind == Flag.Kind.NUMBER:
            kwargs.setdefault(
                "widget", forms.TextInput(attrs={"inputmode": "decimal", "class": "vTextField"})
            )
        elif kind == Flag.Kind.STRING:
            kwargs.setdefault("widget", forms.TextInput(attrs={"class": "vTextField"}))
        else:
            kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3, "class": "json-input"}))
        super().__init__(**kwargs)
        self.widget.attrs["data-kind"] = kind

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, _AsTyped):
            return str(value)
        if value is None:
            return ""
        if self.kind == Flag.Kind.STRING:
            return value if isinstance(value, str) else json.dumps(value)
        return json.dumps(value, ensure_ascii=False)

    def bound_data(self, data: Any, initial: Any) -> Any:
        return _AsTyped(data) if isinstance(data, str) else data

    def to_python(self, value: Any) -> Any:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            return value
        if self.kind == Flag.Kind.STRING:
            return value
        if self.kind == Flag.Kind.BOOLEAN:
            if value not in ("true", "false"):
                raise ValidationError(f"Choose true or false, not {value!r}.", code="invalid_choice")
            return value == "true"
        try:
            parsed = json_loads_finite(value)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                "Enter valid JSON: %(problem)s.", code="invalid", params={"problem": json_problem(exc)}
            ) from None
        if self.kind == Flag.Kind.NUMBER and (
            isinstance(parsed, bool) or not isinstance(parsed, int | float)
        ):
            raise ValidationError(f"Enter a number, not {value!r}.", code="invalid")
        return parsed

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            typed = self.to_python(data)
        except ValidationError:
            return True
        return json.dumps(initial, sort_keys=True) != json.dumps(typed, sort_keys=True)


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
        field_classes = {name: FiniteJSONField for name in ("variants", "targets", "rules")}
        widgets = {
            name: forms.Textarea(attrs={"rows": 4, "class": f"raw-json raw-{name}"})
            for name in ("variants", "targets", "rules")
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kind = self.instance.flag.kind if self.instance.flag_id else Flag.Kind.JSON
        self.fields["value"] = TypedValueField(
            kind=kind, label="Value", help_text=FlagState._meta.get_field("value").help_text
        )
        self.fields["percentage"].widget.attrs.update({"class": "percentage-input", "step": "0.01"})

    def clean_variants(self) -> Any:
        """Weights are entered in percent and stored in thousandths of one (TOTAL_WEIGHT in
        all): say what is wrong in percent, the unit the operator sees."""
        variants = self.cleaned_data.get("variants")
        if isinstance(variants, list) and variants and all(isinstance(v, dict) for v in variants):
            weights = [v.get("weight") for v in variants]
            if all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in weights):
                total = sum(weights)
                if total != TOTAL_WEIGHT:
                    raise ValidationError(
                        "Variant weights must add up to 100 %%; these add up to %(total)s %%.",
                        code="weights",
                        params={"total": percent_text(Decimal(total) * 100 / TOTAL_WEIGHT)},
                    )
        return variants


class FlagStateFormSet(BaseInlineFormSet[FlagState, Flag, forms.ModelForm[FlagState]]):
    """Every changed state is checked by the service that will save it before any is saved:
    a refused change is an error on its environment's form, and nothing on the page is saved."""

    def clean(self) -> None:
        super().clean()
        for state_form in self.forms:
            if not state_form.has_changed() or not state_form.is_valid():
                continue
            state = state_form.instance
            try:
                services.flag_state_check(
                    flag=state.flag, environment=state.environment, **changes_of(state_form)
                )
            except (services.InvalidDocumentError, ValidationError) as exc:
                message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                state_form.add_error(None, f"{state.environment}: {message}")


def changes_of(state_form: forms.ModelForm[FlagState]) -> dict[str, Any]:
    return {field: state_form.cleaned_data[field] for field in state_form.changed_data}


class FlagAdminForm(forms.ModelForm[Flag]):
    reason = forms.CharField(
        required=False,
        max_length=1000,
        help_text="Why: recorded with the new revisions and in the audit log.",
        widget=forms.TextInput(attrs={"class": "vTextField", "id": "id_reason"}),
    )

    class Meta:
        model = Flag
        fields = ("key", "kind", "default_value", "description", "owner", "tags")
        field_classes = {"default_value": FiniteJSONField}
        widgets = {"description": forms.Textarea(attrs={"rows": 2, "cols": 80})}

    def clean_tags(self) -> str:
        return tags_normalise(self.cleaned_data.get("tags") or "")

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


class SwitchForm(forms.Form):
    """The flags list's one-click switch: a flag on or off in one environment, with a reason."""

    flag = forms.IntegerField()
    environment = forms.IntegerField()
    to = forms.ChoiceField(choices=(("off", "off"), ("on", "on")))
    reason = forms.CharField(max_length=1000, strip=True)


# Plans -------------------------------------------------------------------------------------
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


class RolloutStepForm(forms.ModelForm[RolloutStep]):
    """A step row; its guards are a JSON list of rules (rollout.guard_rules), checked with the
    rest of the steps by the service."""

    class Meta:
        model = RolloutStep
        fields = ("position", "environment", "percentage", "not_before", "min_soak_seconds", "guards")
        field_classes = {"guards": FiniteJSONField}
        widgets = {"guards": forms.Textarea(attrs={"rows": 2, "cols": 44, "class": "step-guards"})}


def plan_editable(obj: RolloutPlan | None) -> bool:
    """Only a draft's definition can change: a started plan's steps and value are frozen."""
    return obj is None or obj.status == RolloutPlan.Status.DRAFT


def steps_of(formset: Any) -> list[dict[str, Any]]:
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

    _environment_choices: list[Any] | None = None

    def _construct_form(self, i: int, **kwargs: Any) -> forms.ModelForm[RolloutStep]:
        form = super()._construct_form(i, **kwargs)  # type: ignore[misc]  # not in the stubs
        return self._share_environment_choices(form)

    @property
    def empty_form(self) -> forms.ModelForm[RolloutStep]:
        return self._share_environment_choices(super().empty_form)

    def _share_environment_choices(self, form: forms.ModelForm[RolloutStep]) -> forms.ModelForm[RolloutStep]:
        """Every row's environment menu from one query, not one query a row."""
        field = form.fields.get("environment")
        if isinstance(field, forms.ModelChoiceField):
            if self._environment_choices is None:
                self._environment_choices = list(field.choices)  # type: ignore[arg-type]
            field.choices = self._environment_choices
            inner = getattr(field.widget, "widget", None)  # the admin's related-object wrapper
            if inner is not None:
                inner.choices = self._environment_choices
        return form

    def clean(self) -> None:
        super().clean()
        if any(self.errors) or not plan_editable(None if self.instance._state.adding else self.instance):
            return  # a started plan's steps are shown, not posted
        try:
            flag = self.instance.flag if self.instance.flag_id else None  # guards suit the plan's flag
            services.plan_check_steps(steps=steps_of(self), flag=flag)
        except services.InvalidPlanError as exc:
            raise ValidationError(str(exc)) from None
