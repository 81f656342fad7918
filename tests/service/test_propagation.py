"""A change committed by another process reaches every server process, in every deployment
shape, including the embedded default with no shared cache: a flag change and a key
revocation made by ``manage.py`` from a shell while the server serves. (How fast is a
figure of bench/propagation.py; this checks that it happens, with a generous timeout.)"""

import json
import time

import pytest

from ..servers import SERVICE_SHAPES, service_process

ENOUGH = 12  # consecutive answers: with two workers, both have answered


def settled(service, key, wanted, timeout=15.0):
    """Poll until ``ENOUGH`` answers in a row satisfy ``wanted(status, body)``."""
    deadline, streak = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        status, body = service.get("/api/v1/flagset", {"Authorization": f"Bearer {key}"})
        streak = streak + 1 if wanted(status, body) else 0
        if streak >= ENOUGH:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("shape", SERVICE_SHAPES)
def test_propagation__cli_change_and_revocation__reach_every_server_process(shape, tmp_path):
    with service_process(shape, tmp_path) as service:
        key = service.manage("rollout", "sdk-key", "create", "--env", "prod").strip()
        assert settled(service, key, lambda status, body: status == 200)
        before = json.loads(service.get("/api/v1/flagset", {"Authorization": f"Bearer {key}"})[1])

        service.manage("rollout", "set", "use_batching", "--env", "prod", "--on", "--percentage", "100")

        def changed(status, body):
            document = json.loads(body) if status == 200 else {}
            return (
                document.get("revision") == before["revision"] + 1
                and document["flags"]["use_batching"]["enabled"] is True
            )

        assert settled(service, key, changed), "the flag change never reached every process"

        service.manage("rollout", "kill", "use_batching", "--env", "prod")
        assert settled(
            service,
            key,
            lambda status, body: status == 200 and not json.loads(body)["flags"]["use_batching"]["enabled"],
        ), "the kill switch never reached every process"

        prefix = key[: len("ask_prod_") + 6]
        service.manage("rollout", "sdk-key", "revoke", prefix)
        assert settled(service, key, lambda status, body: status == 401), "a revoked key is still served"
