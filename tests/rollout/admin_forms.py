"""The POST bodies the rollout admin's real forms send, built from the database as the pages
would render them."""

from __future__ import annotations

import json
from typing import Any

from rollout.models import Flag, RolloutPlan

MANAGEMENT = ("TOTAL_FORMS", "INITIAL_FORMS", "MIN_NUM_FORMS", "MAX_NUM_FORMS")


def management(prefix: str, total: int, initial: int) -> dict[str, Any]:
    return dict(zip([f"{prefix}-{name}" for name in MANAGEMENT], [total, initial, 0, 1000], strict=True))


def typed_value(kind: str, value: Any) -> str:
    """A flag's value as its page's typed field shows it: a string as it is, a boolean as
    true/false, no value as empty, anything else as JSON."""
    if value is None:
        return ""
    if kind == "string" and isinstance(value, str):
        return value
    return json.dumps(value)


def flag_change_data(
    flag: Flag, *, reason: str = "", states: dict[str, dict[str, Any]] | None = None, **details: Any
) -> dict[str, Any]:
    """The flag's change form as shown, with ``details`` (description, owner, tags) and, per
    environment key, the state fields in ``states`` replaced (as typed text: the value typed
    by the flag's kind, variants, targets and rules as the JSON the editors write)."""
    data: dict[str, Any] = {
        "description": flag.description,
        "owner": flag.owner,
        "tags": flag.tags,
        "reason": reason,
        **details,
    }
    rows = list(flag.states.select_related("environment").order_by("pk"))
    data.update(management("states", len(rows), len(rows)))
    for index, state in enumerate(rows):
        fields: dict[str, Any] = {
            "id": state.pk,
            "flag": flag.pk,
            "enabled": "on" if state.enabled else "",
            "value": typed_value(flag.kind, state.value),
            "percentage": str(state.percentage),
            "variants": json.dumps(state.variants),
            "targets": json.dumps(state.targets),
            "rules": json.dumps(state.rules),
            "bucket_by": state.bucket_by,
            "salt": state.salt,
            "seed": "" if state.seed is None else str(state.seed),
        }
        fields.update((states or {}).get(state.environment.key, {}))
        for name, value in fields.items():
            if name == "enabled" and not value:
                continue  # an unticked box sends nothing
            data[f"states-{index}-{name}"] = value
    return data


def flag_add_data(key: str, kind: str, default: str, **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "kind": kind,
        "default_value": default,
        "description": "",
        "owner": "",
        "tags": "",
        "reason": "",
        **management("states", 0, 0),
        **extra,
    }


def plan_data(
    name: str, flag: Flag, value: str, steps: list[tuple[int, str]], **extra: Any
) -> dict[str, Any]:
    """A new plan's form: ``steps`` as (environment pk, percentage text)."""
    data: dict[str, Any] = {
        "name": name,
        "flag": flag.pk,
        "value": value,
        **management("steps", len(steps), 0),
    }
    for index, (environment, percentage) in enumerate(steps):
        data.update(
            {
                f"steps-{index}-position": index,
                f"steps-{index}-environment": environment,
                f"steps-{index}-percentage": percentage,
                f"steps-{index}-not_before_0": "",
                f"steps-{index}-not_before_1": "",
                f"steps-{index}-min_soak_seconds": 0,
            }
        )
    data.update(extra)
    return data


def plan_change_data(plan: RolloutPlan, **extra: Any) -> dict[str, Any]:
    """A plan's change form as shown (a draft's steps editable, a started plan's not)."""
    steps = list(plan.steps.order_by("position"))
    data: dict[str, Any] = {"name": plan.name, **extra}
    if plan.status == RolloutPlan.Status.DRAFT:
        data.update({"flag": plan.flag_id, "value": json.dumps(plan.value)})
        data.update(management("steps", len(steps), len(steps)))
        for index, step in enumerate(steps):
            data.update(
                {
                    f"steps-{index}-id": step.pk,
                    f"steps-{index}-plan": plan.pk,
                    f"steps-{index}-position": step.position,
                    f"steps-{index}-environment": step.environment_id,
                    f"steps-{index}-percentage": str(step.percentage),
                    f"steps-{index}-not_before_0": "",
                    f"steps-{index}-not_before_1": "",
                    f"steps-{index}-min_soak_seconds": step.min_soak_seconds,
                }
            )
    else:
        data.update(management("steps", len(steps), len(steps)))
        for index, step in enumerate(steps):
            data.update({f"steps-{index}-id": step.pk, f"steps-{index}-plan": plan.pk})
    for key, value in extra.items():
        data[key] = value
    return data
