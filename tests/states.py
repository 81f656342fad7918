"""States committed the way a worker commits them (through the service's own hydrator on the
service's store), for the admin's and the dashboard's tests."""

from __future__ import annotations

import hashlib
from typing import Any

from statebag.models import Execution
from statebag.services.hydrators import service_hydrator

OWNER, WORKFLOW = "acme", "support"


def commit_states(
    states: list[dict[str, Any]],
    *,
    execution_id: str = "exec-tm",
    owner_id: str = OWNER,
    workflow_id: str = WORKFLOW,
) -> Execution:
    """Commit each state in turn as the next version of ``execution_id``; returns the execution."""
    hydrator = service_hydrator(owner_id, workflow_id)
    payload: dict[str, Any] = {}
    for state in states:
        bag = hydrator.hydrate(payload)
        for name in [name for name in bag if name not in state]:
            del bag[name]
        for name, value in state.items():
            bag[name] = value
        payload = hydrator.dehydrate(
            bag, owner_id=owner_id, workflow_id=workflow_id, execution_id=execution_id
        )
    return Execution.objects.select_related("head").get(owner_id=owner_id, execution_id=execution_id)


def noise(seed: str, size: int) -> str:
    """Text that does not compress: it spills out of the payload into packs."""
    chunks, n = [], 0
    while sum(map(len, chunks)) < size:
        chunks.append(hashlib.sha256(f"{seed}/{n}".encode()).hexdigest())
        n += 1
    return "".join(chunks)[:size]


def conversation(turns: int, status: str = "running") -> dict[str, Any]:
    """A state with small control fields and a large, growing data field."""
    return {
        "status": status,
        "step": turns,
        "config": {"model": "m-1", "temperature": 0.2},
        "messages": [{"role": "user", "text": f"turn {i} {noise(str(i), 12_000)}"} for i in range(turns)],
    }
