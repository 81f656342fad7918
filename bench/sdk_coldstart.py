"""Cold start of a Lambda that evaluates a flag or reads its state: fresh processes, wall time
from spawn to exit.

    python bench/sdk_coldstart.py [--runs 30] [--breakdown N] [--sdk DIR]

Programs, each run --runs times in fresh interpreters, interleaved:
  bare             python -c pass
  import           from analemma_sdk import FlagClient
  first eval       the import, a FlagClient over a warm file cache, one evaluation
  statebag import  from analemma_sdk.statebag import get_hydrator
  first hydrate    the statebag import, get_hydrator(event=event).hydrate(event) of a payload
                   whose state sits in an inline frame, and reading that field (the event is
                   handed over already parsed, as the Lambda runtime does)

The SDK is copied to a scratch folder and byte-compiled, as a Lambda package should be built
(/var/task is read-only, so a package without .pyc files compiles every module at every cold
start); one more row shows the first evaluation from sources alone, for comparison.

The rows marked ``-S`` run without ``site``, against ``bare -S``: this development
virtualenv's .pth hooks import pathlib, re, enum, collections and more at every start, which
hides what the SDK itself imports; a Lambda's interpreter runs no such hooks. There the
optional libraries (orjson, zstandard, boto3) are on the path, as in a package built with the
extras, so what is not loaded is not loaded by choice. ``first hydrate -S, S3`` names an S3
store (STATEBAG_STORE_URL=s3://...), which an inline payload never calls; the other hydrate
rows a local folder.

The file cache is written first by a client that fetched the document from a local HTTP
server; the server is stopped before the timed runs, so the first evaluation can only come
from the file (each run checks the reason it got). Reported: the bare interpreter's median,
and the other medians over it (a hydrate over the statebag import). ``--breakdown N``: then
N runs of ``first hydrate -S`` under ``python -X importtime``, the modules it loads by
median self time. Prints a table, then JSON as the last line."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import marshal
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from _common import ROOT, emit_json, print_table

from analemma_sdk.flags.spec import flag_set_document, flag_spec

SDK_KEY = "ask_prod_" + "k" * 43
DOCUMENT = flag_set_document(
    "prod", 7, {"use_batching": flag_spec("boolean", False, enabled=True, value=True, percentage=25.0)}
)
FIRST_EVAL = """
import sys
from analemma_sdk import FlagClient
details = FlagClient(sys.argv[1], sys.argv[2], cache_path=sys.argv[3], ttl=3600).bool_details(
    "use_batching", unit="exec-42"
)
assert details.reason in ("rollout", "default") and details.revision == 7, details
"""
# The event is handed over as the Lambda runtime hands it, already parsed: loaded with marshal
# (built in, microseconds), so neither a JSON parser nor compiling a literal is timed.
FIRST_HYDRATE = """
import marshal
with open(EVENT_FILE, "rb") as f:
    EVENT = marshal.load(f)
from analemma_sdk.statebag import get_hydrator
bag = get_hydrator(event=EVENT).hydrate(EVENT)
assert len(bag["messages"]) == 24 and bag["messages"][0]["tool_calls"] is None
"""
PROGRAMS = {
    "bare": ["-c", "pass"],
    "import": ["-c", "from analemma_sdk import FlagClient"],
    "first eval": ["-c", FIRST_EVAL],
    "statebag import": ["-c", "from analemma_sdk.statebag import get_hydrator"],
}


def inline_event() -> dict[str, object]:
    """A payload as a batched hydrator writes it for a short conversation: the messages in an
    inline frame (compressed in the payload), so reading them takes no store request."""
    from analemma_sdk.statebag import MemoryStore, StateHydrator

    messages = [
        {
            "role": "user" if i % 2 else "assistant",
            "content": f"turn {i}: " + "please rebook " * 12,
            "tool_calls": None,
        }
        for i in range(24)
    ]
    hydrator = StateHydrator(use_batching=True, use_zstd=True, store=MemoryStore())
    event = hydrator.dehydrate(
        {"messages": messages, "status": "RUNNING"}, owner_id="bench", workflow_id="wf", execution_id="exec-1"
    )
    frame = event["messages"]
    if not (isinstance(frame, dict) and frame.get("$sb") == "z"):
        raise SystemExit("the hydrator kept no inline frame for the messages: nothing to measure")
    return event


def imports(argv: list[str], env: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Module -> (self ms, cumulative ms) of one run under ``-X importtime``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True, check=True
    )
    found = {}
    for line in done.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) == 3 and fields[0].strip().isdigit():
            found[fields[2].strip()] = (int(fields[0]) / 1000, int(fields[1]) / 1000)
    return found


def breakdown(argv: list[str], env: dict[str, str], runs: int) -> list[tuple[str, float, float]]:
    """(module, median self ms, median cumulative ms) of what ``argv`` imports beyond what a bare
    interpreter does, largest first."""
    startup = set(imports(["-S", "-c", "pass"], env))
    own: dict[str, list[float]] = defaultdict(list)
    cumulative: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        for name, (alone, total) in imports(argv, env).items():
            if name not in startup:
                own[name].append(alone)
                cumulative[name].append(total)
    rows = [(name, statistics.median(own[name]), statistics.median(cumulative[name])) for name in own]
    return sorted(rows, key=lambda row: -row[1])


def serve_document() -> http.server.ThreadingHTTPServer:
    body = json.dumps(DOCUMENT, sort_keys=True, separators=(",", ":")).encode()
    etag = f'"{hashlib.sha256(body).hexdigest()[:40]}"'

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one fresh process, in ms."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, *argv], env=env, check=True)
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--breakdown", type=int, default=0, help="runs of first hydrate -S under -X importtime"
    )
    parser.add_argument(
        "--sdk", type=Path, default=ROOT / "sdk", help="the SDK tree to measure (another checkout's)"
    )
    args = parser.parse_args()
    event = inline_event()
    with tempfile.TemporaryDirectory() as tmp:
        event_file = Path(tmp) / "event.marshal"
        event_file.write_bytes(marshal.dumps(event))
        first_hydrate = ["-c", f"EVENT_FILE = {str(event_file)!r}\n{FIRST_HYDRATE}"]
        package = Path(tmp) / "package"
        shutil.copytree(args.sdk / "analemma_sdk", package / "analemma_sdk")
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
        sources = Path(tmp) / "sources"
        shutil.copytree(args.sdk / "analemma_sdk", sources / "analemma_sdk")
        env = {**os.environ, "PYTHONPATH": str(package), "PYTHONDONTWRITEBYTECODE": "1"}
        source_env = {**env, "PYTHONPATH": str(sources)}
        cache = str(Path(tmp) / "flags.bin")
        server = serve_document()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        warm = f"from analemma_sdk import FlagClient; FlagClient({url!r}, {SDK_KEY!r}, cache_path={cache!r}).bool('use_batching')"
        subprocess.run([sys.executable, "-c", warm], env=env, check=True)
        server.shutdown()
        server.server_close()
        if not os.path.exists(cache):
            raise SystemExit("the warm-up client wrote no file cache")
        store_env = {**env, "STATEBAG_STORE_URL": str(Path(tmp) / "store")}
        # No site: the package, then the optional libraries, as a Lambda package has them.
        libraries = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        bare_env = {**env, "PYTHONPATH": os.pathsep.join([str(package), *libraries])}
        no_site = {**store_env, "PYTHONPATH": bare_env["PYTHONPATH"]}
        programs = {name: (argv, env) for name, argv in PROGRAMS.items()}
        programs["first eval, no .pyc"] = (PROGRAMS["first eval"], source_env)
        programs["first hydrate"] = (first_hydrate, store_env)
        programs["bare -S"] = (["-S", *PROGRAMS["bare"]], bare_env)  # the rows without site, against it
        programs["statebag import -S"] = (["-S", *PROGRAMS["statebag import"]], bare_env)
        programs["first hydrate -S"] = (["-S", *first_hydrate], no_site)
        programs["first hydrate -S, S3"] = (
            ["-S", *first_hydrate],
            {**no_site, "STATEBAG_STORE_URL": "s3://bench/sb"},
        )
        times: dict[str, list[float]] = {name: [] for name in programs}
        cpu: dict[str, list[float]] = {name: [] for name in programs}
        for argv, environ in programs.values():  # once each to warm the page cache, untimed
            run(argv + [url, SDK_KEY, cache], environ)
        for _ in range(args.runs):
            for name, (argv, environ) in programs.items():  # interleaved: drift hits all alike
                wall, used = run(argv + [url, SDK_KEY, cache], environ)
                times[name].append(wall)
                cpu[name].append(used)
        modules = breakdown(["-S", *first_hydrate], no_site, args.breakdown) if args.breakdown else []
    medians = {name: statistics.median(values) for name, values in times.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    baseline = {name: "bare -S" if name.endswith(("-S", "S3")) else "bare" for name in programs}
    for name in ("first hydrate", "first hydrate -S", "first hydrate -S, S3"):
        baseline[name] = "statebag import -S" if "-S" in name else "statebag import"
    baseline["bare"] = baseline["bare -S"] = ""
    print(f"{args.runs} fresh processes per program, {sys.executable}")
    rows = []
    for name in programs:
        base = baseline[name]
        p90 = statistics.quantiles(times[name], n=10)[-1] if len(times[name]) > 1 else times[name][0]
        over_wall = round(medians[name] - medians[base], 2) if base else ""
        over_cpu = round(cpu_medians[name] - cpu_medians[base], 2) if base else ""
        rows.append(
            [
                name,
                round(medians[name], 2),
                round(p90, 2),
                round(cpu_medians[name], 2),
                base,
                over_wall,
                over_cpu,
            ]
        )
    print_table(["program", "median ms", "p90 ms", "CPU ms", "over", "over ms", "over CPU ms"], rows)
    print("CPU: user + system time of the process; it varies less than wall time on a busy machine")
    if modules:
        print(
            f"\nfirst hydrate -S, {args.breakdown} runs under -X importtime: the largest imports by self time"
        )
        print_table(
            ["module", "self ms", "cumulative ms"],
            [[n, round(a, 2), round(b, 2)] for n, a, b in modules[:25]],
        )

    def over(name: str, of: dict[str, float] = medians) -> float:
        return round(of[name] - of[baseline[name]], 2)

    emit_json(
        {
            "python_ms": round(medians["bare"], 2),
            "import_ms": over("import"),
            "first_eval_ms": over("first eval"),
            "statebag_import_ms": over("statebag import"),
            "first_hydrate_ms": over("first hydrate"),
            "python_nosite_ms": round(medians["bare -S"], 2),
            "statebag_import_nosite_ms": over("statebag import -S"),
            "first_hydrate_nosite_ms": over("first hydrate -S"),
            "first_hydrate_s3_nosite_ms": over("first hydrate -S, S3"),
            "cpu_ms": {name: over(name, cpu_medians) for name in programs if baseline[name]},
            "breakdown": [
                {"module": n, "self_ms": round(a, 2), "cumulative_ms": round(b, 2)}
                for n, a, b in modules[:25]
            ],
        }
    )


if __name__ == "__main__":
    main()
