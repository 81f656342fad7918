"""What a Lambda's cold start loads: importing the state bag's factory, and hydrating a payload
whose state is kept inline. Each runs in a fresh interpreter without ``site`` (a development
virtualenv's .pth hooks import modules a Lambda would not), with the optional libraries on the
path, so a module missing from the list was not loaded by choice."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from analemma_sdk.statebag import MemoryStore, StateHydrator

SDK = Path(__file__).resolve().parents[2] / "sdk"
OPTIONAL = {"boto3", "botocore", "zstandard", "orjson"}
# Heavy standard-library modules the engine has no need for on these paths.
HEAVY = {"_hashlib", "pathlib", "tempfile", "http.client", "ssl", "socket", "gzip", "dataclasses", "inspect"}


def loaded(program: str, **env: str) -> set[str]:
    code = f"import sys\n{program}\nnames = sorted(sys.modules)\nimport json; print(json.dumps(names))"
    path = os.pathsep.join([str(SDK), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    done = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": path, "PATH": os.environ.get("PATH", ""), **env},
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_import_get_hydrator__loads_only_the_factory():
    modules = loaded("from analemma_sdk.statebag import get_hydrator")
    engine = {m for m in modules if m.startswith("analemma_sdk.")}
    assert engine == {
        "analemma_sdk.statebag",
        "analemma_sdk.statebag.factory",
        "analemma_sdk.statebag.store_urls",
    }
    # Nothing of what importing the engine takes: not even typing, logging, json or threading.
    assert not modules & (OPTIONAL | HEAVY | {"typing", "logging", "json", "threading", "hashlib", "re"})


@pytest.fixture(scope="module")
def inline_event() -> dict:
    messages = [
        {"role": "user", "content": f"turn {i}: rebook me to Seattle " * 4, "calls": None} for i in range(20)
    ]
    hydrator = StateHydrator(use_batching=True, use_zstd=True, store=MemoryStore())
    event = hydrator.dehydrate(
        {"messages": messages, "step": 2}, owner_id="o", workflow_id="w", execution_id="e"
    )
    assert event["messages"]["$sb"] == "z"  # an inline frame: the hydrate reads no store
    return event


@pytest.mark.parametrize("store_url", ["file", "s3://bucket/prefix"])
def test_first_hydrate__inline_payload__loads_no_optional_or_heavy_module(inline_event, store_url, tmp_path):
    program = (
        f"event = {inline_event!r}\n"
        "from analemma_sdk.statebag import get_hydrator\n"
        "bag = get_hydrator(event=event).hydrate(event)\n"
        "assert len(bag['messages']) == 20 and bag['messages'][0]['calls'] is None\n"
    )
    url = str(tmp_path / "store") if store_url == "file" else store_url
    modules = loaded(program, STATEBAG_STORE_URL=url)
    assert not modules & (OPTIONAL | HEAVY)
    # Reading pays for none of what only parsing text with patterns, typing, logging or a
    # dehydration needs (re alone, with enum, functools and collections, is ~7 ms).
    light = {"re", "enum", "functools", "collections", "typing", "json", "base64", "threading", "logging"}
    assert not modules & light
    dehydration_only = {"planning", "packing", "commit", "manifests", "packs", "chunking"}
    assert not modules & {f"analemma_sdk.statebag.{name}" for name in dehydration_only}


def test_first_dehydrate__after_a_read__loads_no_typing_logging_or_threading(inline_event, tmp_path):
    program = (
        f"event = {inline_event!r}\n"
        "from analemma_sdk.statebag import get_hydrator\n"
        "hydrator = get_hydrator(event=event)\n"
        "bag = hydrator.hydrate(event)\n"
        "bag['messages'] = bag['messages'] + [{'role': 'user', 'content': 'and a window seat'}]\n"
        "payload = hydrator.dehydrate(bag, owner_id='o', workflow_id='w', execution_id='e')\n"
        "assert payload['messages']['$sb'] == 'z'\n"
    )
    modules = loaded(program, STATEBAG_STORE_URL=str(tmp_path / "store"), STATEBAG_USE_ZSTD="false")
    # orjson, when installed, brings re and dataclasses with it (the `fast` extra's price);
    # nothing of the engine's own needs typing, logging, threading or base64.
    assert not modules & {"typing", "base64", "threading", "logging"}


TELEMETRY = "analemma_sdk.telemetry"


def _telemetry_modules(modules: set[str]) -> set[str]:
    return {m for m in modules if m == TELEMETRY or m.startswith(TELEMETRY + ".")}


def _first_evaluation(telemetry: str) -> str:
    from analemma_sdk.flags.spec import flag_set_document, flag_spec

    doc = flag_set_document("prod", 1, {"f": flag_spec("boolean", False, enabled=True)})
    return (
        "import time\n"
        "from analemma_sdk import FlagClient\n"
        f"client = FlagClient('http://127.0.0.1:9', 'ask_prod_' + 'x' * 43, cache_path=None, {telemetry}"
        f"bootstrap={{'document': {doc!r}, 'fetched_at': time.time()}})\n"
        "assert all(client.bool('f', unit=f'u{i}') for i in range(10))\n"
    )


def test_import_analemma_sdk__loads_no_telemetry_module():
    assert not _telemetry_modules(loaded("import analemma_sdk\nfrom analemma_sdk import FlagClient"))


@pytest.mark.parametrize(
    "telemetry", ["telemetry=False, ", "", "telemetry=True, "], ids=["off", "env_off", "on"]
)
def test_first_evaluation__loads_no_telemetry_module(telemetry):
    # Off: never. On: evaluations are only logged until the first batch is counted or sent.
    env = {"ANALEMMA_TELEMETRY": "false"} if telemetry == "" else {}
    assert not _telemetry_modules(loaded(_first_evaluation(telemetry), **env))


def test_first_hydrate__telemetry_off_with_a_write_key__loads_no_telemetry_module(inline_event, tmp_path):
    program = (
        f"event = {inline_event!r}\n"
        "from analemma_sdk.statebag import get_hydrator\n"
        "hydrator = get_hydrator(event=event)\n"
        "assert hydrator.telemetry is None\n"
        "bag = hydrator.hydrate(event)\n"
        "assert len(bag['messages']) == 20\n"
    )
    env = {
        "STATEBAG_STORE_URL": str(tmp_path / "store"),
        "STATEBAG_SERVICE_URL": "http://127.0.0.1:9",
        "STATEBAG_WRITE_KEY": "swk_x",
        "ANALEMMA_TELEMETRY": "false",
    }
    assert not _telemetry_modules(loaded(program, **env))


def test_first_hydrate__no_flag_client_nor_write_key__loads_no_telemetry_module(inline_event, tmp_path):
    program = (
        f"event = {inline_event!r}\n"
        "from analemma_sdk.statebag import get_hydrator\n"
        "bag = get_hydrator(event=event).hydrate(event)\n"
        "assert len(bag['messages']) == 20\n"
    )
    assert not _telemetry_modules(loaded(program, STATEBAG_STORE_URL=str(tmp_path / "store")))
