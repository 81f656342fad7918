"""The demo `make run` seeds on first start (off with ANALEMMA_DEMO=false): a "demo"
environment whose flags are in different states, a running rollout plan, and a few recorded
executions with several versions each, so the admin has something in every page.

Everything is made by the services an operator's change goes through (revisions, audit
entries) and by the SDK's hydrator writing into the configured store, not by inserting rows.
Each part is made only when missing, so seeding again adds nothing, and what an operator
changed in the demo since stays as they left it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from analemma_sdk.statebag import StateHydrator
from rollout.models import Environment, Flag, RolloutPlan
from rollout.services.environments import environment_create
from rollout.services.flags import flag_create, flag_kill, flag_state_update
from rollout.services.plans import plan_create, plan_start
from statebag.models import Execution
from statebag.services import StateVersioningService
from statebag.services.collection import execution_finish
from statebag.services.stores import statebag_store

ACTOR = "demo"
ENVIRONMENT = "demo"
OWNER = "demo"
WORKFLOW = "support-agent"
PLAN_NAME = "demo: agent memory to everyone"
PLAN_SOAK_SECONDS = 10 * 60  # long enough to see the plan running, short enough to see it move


def _on(flag: Flag, environment: Environment) -> None:
    flag_state_update(
        flag=flag, environment=environment, actor=ACTOR, reason="demo: on", enabled=True, value=True
    )


def _killed(flag: Flag, environment: Environment) -> None:
    flag_state_update(
        flag=flag, environment=environment, actor=ACTOR, reason="demo: on", enabled=True, value=True
    )
    flag_kill(flag=flag, environment=environment, actor=ACTOR, reason="demo: error rate doubled")


def _percentage(flag: Flag, environment: Environment) -> None:
    flag_state_update(
        flag=flag,
        environment=environment,
        actor=ACTOR,
        reason="demo: ramp",
        enabled=True,
        value=True,
        percentage=25,
    )


def _variants(flag: Flag, environment: Environment) -> None:
    # Weights are in thousandths of a percent: 50 %, 30 %, 20 %.
    split = [("gpt-4o-mini", 50_000), ("gpt-4o", 30_000), ("claude-sonnet", 20_000)]
    flag_state_update(
        flag=flag,
        environment=environment,
        actor=ACTOR,
        reason="demo: A/B/C test",
        enabled=True,
        variants=[{"value": value, "weight": weight} for value, weight in split],
    )


# key, kind, default, description, owner, how it is set in the demo environment
FLAGS: list[tuple[str, str, Any, str, str, Callable[[Flag, Environment], None] | None]] = [
    ("demo-new-checkout", "boolean", False, "The new checkout flow.", "payments", _on),
    ("demo-legacy-search", "boolean", False, "Search through the old index.", "search", _killed),
    ("demo-fast-summaries", "boolean", False, "Summaries from the smaller model.", "ml", _percentage),
    ("demo-answer-model", "string", "gpt-4o-mini", "Which model answers customers.", "ml", _variants),
    ("demo-agent-memory", "boolean", False, "Agents remember earlier tickets.", "ml", None),  # the plan's
]


def demo_seed(*, operator: AbstractBaseUser | None = None) -> list[str]:
    """Make what is missing of the demo; returns what was made (empty when nothing was)."""
    made: list[str] = []
    environment = Environment.objects.filter(key=ENVIRONMENT).first()
    if environment is None:
        environment = environment_create(key=ENVIRONMENT, name="Demo", actor=ACTOR)
        made.append(f"environment {ENVIRONMENT}")
    for key, kind, default, description, owner, configure in FLAGS:
        if Flag.objects.filter(key=key).exists():
            continue
        flag = flag_create(
            key=key, kind=kind, default_value=default, actor=ACTOR, description=description, owner=owner
        )
        if configure is not None:
            configure(flag, environment)
        made.append(f"flag {key}")
    if not RolloutPlan.objects.filter(name=PLAN_NAME).exists():
        made.append(_plan(environment, operator or _operator()))
    for number in range(1, 5):
        execution_id = f"demo-ticket-{number}"
        if not Execution.objects.filter(owner_id=OWNER, execution_id=execution_id).exists():
            _record_execution(execution_id, steps=2 + number, finished=number == 1)
            made.append(f"execution {execution_id}")
    return made


def _operator() -> AbstractBaseUser:
    """Who the demo plan runs for: the first active superuser (bootstrap_local's admin)."""
    user = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if user is None:
        raise LookupError("the demo plan needs a superuser to run for: run `manage.py bootstrap_local` first")
    return user


def _plan(environment: Environment, operator: AbstractBaseUser) -> str:
    flag = Flag.objects.get(key="demo-agent-memory")
    steps = [
        {"environment": environment, "percentage": percentage, "min_soak_seconds": PLAN_SOAK_SECONDS}
        for percentage in (10, 50, 100)
    ]
    plan = plan_create(name=PLAN_NAME, flag=flag, value=True, steps=steps, actor=ACTOR)
    plan_start(plan=plan, user=operator, actor=ACTOR)
    return f"plan {PLAN_NAME!r}"


def _record_execution(execution_id: str, *, steps: int, finished: bool) -> None:
    """A support conversation recorded version by version, as a Lambda would: hydrate the last
    payload, change the state, dehydrate into the next version (two-phase, values in packs)."""
    hydrator = StateHydrator(
        use_batching=True,
        use_zstd=True,
        use_2pc=True,
        inline_frames=False,
        store=statebag_store(),
        manifest_store=StateVersioningService(use_2pc=True),
        cohort={"use_batching": True, "use_zstd": True},
    )
    payload: dict[str, Any] = {}
    for step in range(1, steps + 1):
        bag = hydrator.hydrate(payload)
        bag["status"] = "done" if finished and step == steps else "running"
        bag["step"] = step
        bag["workflow_config"] = {"model": "gpt-4o-mini", "tools": ["lookup_order", "refund", "escalate"]}
        bag["messages"] = [
            {"role": "user" if turn % 2 == 0 else "assistant", "text": _turn_text(execution_id, turn)}
            for turn in range(step * 2)
        ]
        bag["llm_response"] = {"text": _turn_text(execution_id, step * 2 + 1), "tokens": 180 + step * 40}
        bag["step_history"] = [
            {"step": n, "tool": "lookup_order" if n % 2 else "refund"} for n in range(step)
        ]
        payload = hydrator.dehydrate(bag, owner_id=OWNER, workflow_id=WORKFLOW, execution_id=execution_id)
    if finished:
        execution_finish(owner_id=OWNER, execution_id=execution_id)


def _turn_text(execution_id: str, turn: int) -> str:
    return (
        f"[{execution_id} turn {turn}] Thanks for your patience. I looked up order #{4100 + turn} and "
        "see it shipped on Monday; the carrier shows it held at the depot. I can reship it today or "
        "refund it in full. Which would you prefer? " * 6
    )
