"""A plan step's guard rules: what the built-in rollout guard (``telemetry.guards``) compares
between the step's treatment and control cohorts while the step is live. Kept on the step as
a JSON list (``RolloutStep.guards``) of

    {"metric": "error_rate", "worse": "higher", "tolerance": 0.1,
     "tolerance_kind": "relative", "min_sample": 500}

* ``metric``: ``error_rate`` (typed errors per execution), ``degraded_rate``
  (degraded-to-legacy events per execution), ``requests_per_execution`` (store requests of
  every operation), ``p95_hydrate_ms`` / ``p95_dehydrate_ms`` (the share of the treatment's
  hydrations slower than the control's p95), or ``counter:NAME`` (any counter the SDK reports,
  per execution, e.g. ``counter:bytes_written``).
* ``worse``: ``higher`` (default) or ``lower``: which way is harm.
* ``tolerance`` and ``tolerance_kind``: how much worse the treatment may be before it counts
  as harm. ``relative`` (default): a share of the control's value (0.1: up to 10 % worse);
  ``absolute``: in the metric's own unit (0.001: up to 0.1 percentage point more errors).
* ``min_sample``: units each cohort needs (executions; hydrations for latency) before the
  guard decides; until then it waits and the plan does not advance.

Only a plan on a flag the hydrators' cohorts record (``COHORT_FLAGS``: the statebag's own
settings) can have guards: no cohort tells another flag's treatment from its control, so its
guard would wait forever.

Checked here (rollout may not import telemetry); ``GuardRuleError`` says what is wrong."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

# The flags a cohort records: a hydrator's cohort is its configuration tag
# (``StateHydrator.config_tag``), keyed by these fields, the statebag's own settings.
from analemma_sdk.statebag.config import FIELDS as COHORT_FLAGS

METRICS = (
    "error_rate",
    "degraded_rate",
    "requests_per_execution",
    "p95_hydrate_ms",
    "p95_dehydrate_ms",
)
COUNTER_PREFIX = "counter:"
COUNTER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # the SDK's counter names
WORSE = ("higher", "lower")
TOLERANCE_KINDS = ("relative", "absolute")
FIELDS = ("metric", "worse", "tolerance", "tolerance_kind", "min_sample")
DEFAULTS: dict[str, Any] = {
    "worse": "higher",
    "tolerance": 0.1,
    "tolerance_kind": "relative",
    "min_sample": 500,
}
MAX_RULES = 10
MAX_MIN_SAMPLE = 10_000_000


class GuardRuleError(ValueError):
    """A guard rule is wrong; the message says what."""


def _kind(value: Any) -> str:
    """What an operator gave, in their words rather than a Python type's name (a form's JSON
    text arrives as a str subclass)."""
    if isinstance(value, str):
        return "text"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return "something else"


def check_guarded_flag(flag: str) -> None:
    """GuardRuleError unless the hydrators' cohorts record ``flag``, so that a guard on a plan
    of it has a treatment and a control to compare."""
    if flag not in COHORT_FLAGS:
        raise GuardRuleError(
            f"only a plan on a flag the statebag cohorts record ({', '.join(COHORT_FLAGS)}) can have "
            f"guards: no cohort tells {flag!r}'s treatment from its control, so the step would wait forever"
        )


def _metric(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise GuardRuleError(f"metric must be one of {', '.join(METRICS)} or counter:NAME, not {value!r}")
    if value in METRICS:
        return value
    if value.startswith(COUNTER_PREFIX) and COUNTER_NAME.match(value[len(COUNTER_PREFIX) :]):
        return value
    raise GuardRuleError(f"unknown metric {value!r}: use one of {', '.join(METRICS)} or counter:NAME")


def clean_rule(rule: Any) -> dict[str, Any]:
    """The rule with its defaults filled in, or GuardRuleError."""
    if not isinstance(rule, Mapping):
        raise GuardRuleError(f"a guard is an object with a metric, not {_kind(rule)}")
    unknown = set(rule) - set(FIELDS)
    if unknown:
        raise GuardRuleError(f"unknown guard fields: {', '.join(sorted(map(str, unknown)))}")
    cleaned = {**DEFAULTS, **rule, "metric": _metric(rule.get("metric"))}
    if cleaned["worse"] not in WORSE:
        raise GuardRuleError(f"worse must be higher or lower, not {cleaned['worse']!r}")
    if cleaned["tolerance_kind"] not in TOLERANCE_KINDS:
        raise GuardRuleError(
            f"tolerance_kind must be relative or absolute, not {cleaned['tolerance_kind']!r}"
        )
    tolerance = cleaned["tolerance"]
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not math.isfinite(tolerance):
        raise GuardRuleError(f"tolerance must be a number, not {tolerance!r}")
    if tolerance < 0:
        raise GuardRuleError(f"tolerance must be 0 or more, not {tolerance}")
    cleaned["tolerance"] = float(tolerance)
    sample = cleaned["min_sample"]
    if isinstance(sample, bool) or not isinstance(sample, int) or not 1 <= sample <= MAX_MIN_SAMPLE:
        raise GuardRuleError(
            f"min_sample must be a whole number from 1 to {MAX_MIN_SAMPLE:,}, not {sample!r}"
        )
    return {name: cleaned[name] for name in FIELDS}


def clean_rules(rules: Any) -> list[dict[str, Any]]:
    """A step's rules, each cleaned; None or empty: no guard."""
    if rules is None:
        return []
    if not isinstance(rules, list | tuple):
        raise GuardRuleError(f"guards must be a list of guard objects, not {_kind(rules)}")
    if len(rules) > MAX_RULES:
        raise GuardRuleError(f"at most {MAX_RULES} guards a step, not {len(rules)}")
    cleaned = [clean_rule(rule) for rule in rules]
    metrics = [rule["metric"] for rule in cleaned]
    repeated = sorted({m for m in metrics if metrics.count(m) > 1})
    if repeated:
        raise GuardRuleError(f"one guard a metric: {', '.join(repeated)} is repeated")
    return cleaned
