"""A closed-loop HTTP load against a server on loopback, for the benchmarks that measure one
(commit_throughput.py, telemetry_ingest.py): client threads in forked processes, each
repeating one operation between a common start and stop time, with the CPU time the server's
processes spent meanwhile read from /proc.

``make_operation(name)`` is called in each client thread with a name unique to the run and
returns the operation: a callable that does one request (or one step of several) and returns a
label to count it under (an HTTP status, a path taken); an exception ends that client and is
reported, which makes the run invalid."""

from __future__ import annotations

import http.client
import multiprocessing
import os
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

WARMUP_SECONDS = 1.0  # each client runs unmeasured this long before the common start

Operation = Callable[[], object]


def closed_loop(
    make_operation: Callable[[str], Operation],
    *,
    clients: int,
    processes: int,
    seconds: float,
    servers: Mapping[str, int | None],
) -> dict[str, Any]:
    """Run ``clients`` clients for ``seconds``; their latencies, counted labels and errors, and
    the CPU milliseconds each process of ``servers`` (name: root pid) spent per operation."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    processes = min(processes, clients)
    start_at = time.time() + 2.0 + WARMUP_SECONDS  # every client connected and warmed up first
    stop_at = start_at + seconds
    run_id = secrets.token_hex(3)
    spawned = []
    for index in range(processes):
        threads = clients // processes + (1 if index < clients % processes else 0)
        prefix = f"{run_id}-{index}"
        process = context.Process(
            target=_client_process, args=(make_operation, threads, prefix, start_at, stop_at, results)
        )
        process.start()
        spawned.append(process)
    time.sleep(max(0.0, start_at - time.time()))
    before = {name: cpu_seconds(pid) for name, pid in servers.items() if pid}
    time.sleep(max(0.0, stop_at - time.time()))
    spent = {name: cpu_seconds(pid) - before[name] for name, pid in servers.items() if pid}
    collected = [item for _ in spawned for item in results.get(timeout=seconds + 120)]
    for process in spawned:
        process.join()
    latencies = sorted(value for values, _, _ in collected for value in values)
    labels: dict[str, int] = {}
    for _, counted, _ in collected:
        for label, count in counted.items():
            labels[label] = labels.get(label, 0) + count
    done = len(latencies)
    return {
        "clients": clients,
        "done": done,
        "per_s": done / seconds,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else 0.0,
        "p99_ms": 1000 * latencies[min(done - 1, int(done * 0.99))] if latencies else 0.0,
        # CPU per operation in each server: how many operations one core of it serves a
        # second, whatever else the machine runs.
        **{
            f"{name}_cpu_ms": 1000 * spent[name] / done if done and name in spent else None
            for name in servers
        },
        "labels": labels,
        "errors": [error for _, _, error in collected if error][:3],
    }


def _client_process(
    make_operation: Callable[[str], Operation],
    threads: int,
    prefix: str,
    start_at: float,
    stop_at: float,
    results: Any,
) -> None:
    collected: list[tuple[list[float], dict[str, int], str]] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        latencies: list[float] = []
        labels: dict[str, int] = {}
        error = ""
        try:
            operation = make_operation(f"{prefix}-{index}")
            while time.time() < start_at - WARMUP_SECONDS:
                time.sleep(0.01)
            while (began := time.time()) < stop_at:
                label = str(operation())
                if began >= start_at:
                    latencies.append(time.time() - began)
                    labels[label] = labels.get(label, 0) + 1
        except Exception as exc:  # reported, not hidden: the run is then invalid
            error = f"{type(exc).__name__}: {exc}"
        with lock:
            collected.append((latencies, labels, error))

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(collected)


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) of process ``root`` and all its descendants, those that have
    exited included, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry)] = int(fields[1])
        # Its own time, and its children's that have exited (backends, reaped by the postmaster).
        times[int(entry)] = sum(int(value) for value in fields[11:15]) / tick
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(child for child, parent in parents.items() if parent == pid)
    return total


def postmaster(database: str) -> int | None:
    """The pid of a throwaway cluster's postmaster (its socket folder holds its data folder)."""
    from urllib.parse import unquote, urlparse

    folder = unquote(urlparse(database).hostname or "")
    try:
        return int(Path(folder, "data", "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_http(port: int, timeout: float = 60) -> None:
    """Until the service on ``port`` answers ``/livez``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/livez", headers={"X-Forwarded-Proto": "https"})
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the service did not start")
        time.sleep(0.2)
