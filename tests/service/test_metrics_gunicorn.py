"""/metrics under gunicorn with two workers and PROMETHEUS_MULTIPROC_DIR, as production runs it
(analemma/gunicorn_conf.py): whichever worker answers a scrape, it reports every worker's counts,
also those of a worker that was killed and replaced."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from ..servers import ROOT, listening_socket

TOKEN = secrets.token_urlsafe(32)
REQUESTS = 40


def get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    # A new connection each time, so the two workers share the requests.
    request = urllib.request.Request(url, headers={"X-Forwarded-Proto": "https", **headers})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def answers(url: str) -> bool:
    try:
        return get(url, {})[0] == 200
    except OSError:  # not listening yet, or workers still booting past the read timeout
        return False


def unauthorized_count(base: str) -> float:
    status, body = get(base + "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, (status, body[:200])
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "analemma_flagset_requests_total" and sample.labels == {"status": "401"}:
                return sample.value
    raise AssertionError("no analemma_flagset_requests_total{status='401'} in the scrape")


def counts_by_pid(folder: Path) -> dict[int, float]:
    """The 401 count in each process's own file."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(path)], accumulate=False):
            for sample in family.samples:
                if sample.name == "analemma_flagset_requests_total" and sample.labels == {"status": "401"}:
                    counts[int(path.stem.split("_")[1])] = sample.value
    return counts


def worker_pids(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def test_metrics__gunicorn_two_workers__every_scrape_sums_both_and_survives_a_killed_worker(tmp_path):
    folder = tmp_path / "prometheus"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="analemma.settings.production",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="127.0.0.1",
        DATABASE_URL=f"sqlite:///{tmp_path}/analemma.sqlite3",  # never migrated: /metrics says so
        STATIC_ROOT=str(tmp_path),
        ANALEMMA_VAR_DIR=str(tmp_path),
        LOG_LEVEL="WARNING",
        PROMETHEUS_MULTIPROC_DIR=str(folder),
        METRICS_TOKEN=TOKEN,
        GUNICORN_ACCESS_LOG="",
    )
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"left by an earlier run")  # started afresh
    with listening_socket() as listener:
        base = f"http://127.0.0.1:{listener.getsockname()[1]}"
        command = [sys.executable, "-m", "gunicorn", "--config", "analemma/gunicorn_conf.py", "analemma.wsgi"]
        command += ["--bind", f"fd://{listener.fileno()}", "--workers", "2", "--log-level", "warning"]
        server = subprocess.Popen(command, cwd=ROOT, env=env, pass_fds=(listener.fileno(),))
        try:
            deadline = time.monotonic() + 60
            while not answers(base + "/livez"):
                assert server.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
            # When the flag-set endpoint is asked without a key, REQUESTS times
            statuses = {get(base + "/api/v1/flagset", {})[0] for _ in range(REQUESTS)}
            assert statuses == {401}
            # Then every scrape, whichever worker answers it, says REQUESTS
            assert {unauthorized_count(base) for _ in range(6)} == {REQUESTS}
            counted = counts_by_pid(folder)
            assert 999999 not in counted and set(counted) >= worker_pids(server.pid)
            assert sum(counted.values()) == REQUESTS
            # When the worker that counted most is killed and replaced, its counts stay in the sum
            victim = max(worker_pids(server.pid), key=lambda pid: counted.get(pid, 0))
            os.kill(victim, signal.SIGKILL)
            while len(worker_pids(server.pid) - {victim}) < 2:
                assert time.monotonic() < deadline + 30, "gunicorn did not replace the worker"
                time.sleep(0.1)
            get(base + "/api/v1/flagset", {})
            assert {unauthorized_count(base) for _ in range(6)} == {REQUESTS + 1}
            # Without the token, nothing (production names no network)
            assert get(base + "/metrics", {})[0] == 404
        finally:
            server.send_signal(signal.SIGINT)  # quick shutdown: a worker still booting stops too
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
