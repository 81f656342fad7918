"""Cold start of a Lambda that evaluates a flag: fresh processes, wall time from spawn to exit.

    python bench/sdk_coldstart.py [--runs 30]

Three programs run in turn, each --runs times in fresh interpreters:
  bare        python -c pass
  import      from analemma_sdk import FlagClient
  first eval  the import, a FlagClient over a warm file cache, one evaluation
  statebag import  the state bag engine's import, for a Lambda that also offloads state

The SDK is copied to a scratch folder and byte-compiled, as a Lambda package should be built
(/var/task is read-only, so a package without .pyc files compiles every module at every cold
start); one more row shows the first evaluation from sources alone, for comparison.

The file cache is written first by a client that fetched the document from a local HTTP
server; the server is stopped before the timed runs, so the first evaluation can only come
from the file (each run checks the reason it got). Reported: the bare interpreter's median,
and the other two medians over it. Prints a table, then JSON as the last line."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
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
PROGRAMS = {
    "bare": ["-c", "pass"],
    "import": ["-c", "from analemma_sdk import FlagClient"],
    "first eval": ["-c", FIRST_EVAL],
    "statebag import": ["-c", "from analemma_sdk.statebag import get_hydrator"],
}


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


def run(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *argv], env=env, check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "package"
        shutil.copytree(ROOT / "sdk" / "analemma_sdk", package / "analemma_sdk")
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
        sources = Path(tmp) / "sources"
        shutil.copytree(ROOT / "sdk" / "analemma_sdk", sources / "analemma_sdk")
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
        programs = {name: (argv, env) for name, argv in PROGRAMS.items()}
        programs["first eval, no .pyc"] = (PROGRAMS["first eval"], source_env)
        times: dict[str, list[float]] = {name: [] for name in programs}
        for argv, environ in programs.values():  # once each to warm the page cache, untimed
            run(argv + [url, SDK_KEY, cache], environ)
        for _ in range(args.runs):
            for name, (argv, environ) in programs.items():  # interleaved: drift hits all alike
                times[name].append(run(argv + [url, SDK_KEY, cache], environ))
    medians = {name: statistics.median(values) for name, values in times.items()}
    bare = medians["bare"]
    print(f"{args.runs} fresh processes per program, {sys.executable}")
    print_table(
        ["program", "median ms", "p90 ms", "over bare ms"],
        [
            [
                name,
                round(medians[name], 2),
                round(statistics.quantiles(times[name], n=10)[-1], 2),
                round(medians[name] - bare, 2),
            ]
            for name in programs
        ],
    )
    emit_json(
        {
            "python_ms": round(bare, 2),
            "import_ms": round(medians["import"] - bare, 2),
            "first_eval_ms": round(medians["first eval"] - bare, 2),
            "statebag_import_ms": round(medians["statebag import"] - bare, 2),
        }
    )


if __name__ == "__main__":
    main()
