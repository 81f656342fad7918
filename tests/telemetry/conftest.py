"""Telemetry fixtures: SDK keys of two environments, a batch builder, a poster."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rollout.models import Environment
from telemetry import services

from ..factories import sdk_key

URL = "/api/v1/telemetry"


@pytest.fixture(autouse=True)
def _fresh_counts() -> Iterator[None]:
    """Refusal counts a process has not written yet belong to the test that made them."""
    services._pending_counts.clear()
    services._last_flush[0] = 0.0
    yield
    services._pending_counts.clear()
    services._last_flush[0] = 0.0


@pytest.fixture
def prod_key(db: None) -> str:
    return sdk_key(Environment.objects.get(key="prod"), actor="ops")[1]


@pytest.fixture
def dev_key(db: None) -> str:
    return sdk_key(Environment.objects.get(key="dev"), actor="ops")[1]


def make_batch(**overrides: Any) -> dict[str, Any]:
    now = time.time()
    batch: dict[str, Any] = {
        "v": 1,
        "batch": uuid.uuid4().hex,
        "sent_at": now,
        "window": [now - 30, now],
        "sdk": {"name": "analemma-python", "version": "0.9"},
        "dropped": 0,
        "evaluations": [
            {"flag": "use_zstd", "variant": None, "value": True, "reason": "rollout", "count": 120},
        ],
        "statebag": [
            {
                "cohort": {"use_batching": True, "use_zstd": True, "use_2pc": True},
                "counters": {"executions": 10, "requests_get": 3, "requests_put": 2, "bytes_written": 12345},
                "latency_ms": {"hydrate": [[1, 3], [2, 5], [4, 2]], "dehydrate": [[8, 4], [16, 6]]},
            }
        ],
    }
    batch.update(overrides)
    return batch


@pytest.fixture
def post(client: Any) -> Callable[..., Any]:
    def send(key: str | None, body: Any, *, raw: bytes | None = None, **headers: str) -> Any:
        data = raw if raw is not None else json.dumps(body)
        if key is not None:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
        return client.post(URL, data, content_type="application/json", **headers)

    return send
