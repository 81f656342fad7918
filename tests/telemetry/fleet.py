"""A fleet of Lambdas, played by one process against a live service: run as a script, with only
the SDK on its path (what a Lambda ships).

    python fleet.py URL SDK_KEY --executions 4000 --containers 8 [--fault 0.3]

Each container is a fresh flag client (and so a fresh telemetry sink) that handles its share
of the execution ids, like a Lambda container living through many invocations. Each execution
asks the flag client for its configuration (``get_hydrator(flags=..., unit=execution id)``:
``use_zstd`` is on for the plan's percentage of ids), writes its first state (an execution)
and then reads it back and writes the next step (a second execution), as two invocations of
a workflow do. With ``--fault``, the blob store of the executions that run with ``use_zstd``
on refuses that share of its writes (a typed ``UploadRejectedError``): the treatment cohort
fails, the control does not. At the end of its share each container flushes its telemetry
(a handler's ``flush(timeout=...)``).

Prints one JSON line: executions per cohort and failures seen, for the test to check against
what the service ingested."""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

from analemma_sdk import FlagClient
from analemma_sdk.statebag import MemoryStore, get_hydrator, reset_hydrators
from analemma_sdk.statebag.errors import StateBagError, UploadRejectedError

FLAG = "use_zstd"
PAYLOAD = random.Random(7).randbytes(6000).hex()  # 12 kB that does not compress: offloaded, not inline


class FaultyStore(MemoryStore):
    """A store that refuses a share of its writes (seeded: the same run refuses the same)."""

    def __init__(self, share: float, seed: int) -> None:
        super().__init__()
        self.share = share
        self.random = random.Random(seed)

    def put(self, key: str, data: bytes) -> None:
        if self.random.random() < self.share:
            raise UploadRejectedError("injected fault: the store refused the write")
        super().put(key, data)


def run(url: str, key: str, executions: int, containers: int, fault: float, cache: Path) -> dict[str, int]:
    seen = {"treatment": 0, "control": 0, "failed": 0, "flushed": 0}
    ids = [f"exec-{i:06d}" for i in range(executions)]
    for container in range(containers):
        reset_hydrators()  # a new container: nothing warm
        client = FlagClient(url, key, ttl=3600, timeout=10, cache_path=cache / f"flags-{container}.bin")
        healthy, faulty = MemoryStore(), FaultyStore(fault, seed=container)
        for execution_id in ids[container::containers]:
            on = client.bool(FLAG, unit=execution_id)
            store = faulty if on and fault > 0 else healthy
            hydrator = get_hydrator(flags=client, unit=execution_id, store=store)
            seen["treatment" if on else "control"] += 1
            ids_of = {"owner_id": "fleet", "workflow_id": "wf", "execution_id": execution_id}
            try:
                payload = hydrator.dehydrate({"step": 0, "llm_response": {"text": PAYLOAD}}, **ids_of)
                state = hydrator.hydrate(payload).to_dict()
                hydrator.dehydrate({**state, "step": 1, "llm_response": {"text": PAYLOAD + "more"}}, **ids_of)
            except StateBagError:
                seen["failed"] += 1  # the Lambda's invocation fails; its cohort counted the error
        seen["flushed"] += int(client.flush(timeout=10.0))
    return seen


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("key")
    parser.add_argument("--executions", type=int, default=4000)
    parser.add_argument("--containers", type=int, default=8)
    parser.add_argument("--fault", type=float, default=0.0)
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        seen = run(
            options.url, options.key, options.executions, options.containers, options.fault, Path(cache)
        )
    sys.stdout.write(json.dumps(seen) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
