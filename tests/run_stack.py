"""`make run`'s stack (``manage.py run_local``: web, worker and beat on a broker in a folder)
started for a test: each on its own SQLite file and folders under a temp dir, periodic tasks
every second (django-celery-beat's table edited before the start, as an operator could in the
admin), so tests take seconds rather than minutes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .servers import free_port

ROOT = Path(__file__).resolve().parents[1]
STARTED = re.compile(r"^(web|worker|beat)\s+\| started \(pid (\d+)\)")
EVERY_SECOND = """
from django_celery_beat.models import IntervalSchedule, PeriodicTask
every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
PeriodicTask.objects.update(interval=every_second)
"""


def stack_env(folder: Path, **extra: str) -> dict[str, str]:
    """The environment of `make run` on ``folder``: local settings, nothing from the caller's
    own database, broker or cache."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CELERY_", "DATABASE_", "REDIS_", "STATEBAG_", "ANALEMMA_"))
        and key not in ("DJANGO_SETTINGS_MODULE", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS")
    }
    env.update(DJANGO_SETTINGS_MODULE="analemma.settings.local", ANALEMMA_VAR_DIR=str(folder), **extra)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def shell(env: dict[str, str], code: str) -> str:
    """Run ``code`` in a Django shell of its own (a process that exits when done)."""
    return manage(env, "shell", "--no-imports", "-c", code)


def query(folder: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the stack's database directly, without a Django process of our own."""
    with contextlib.closing(sqlite3.connect(folder / "analemma.sqlite3", timeout=10)) as db:
        return db.execute(sql, params).fetchall()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, stack: Stack | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if stack is not None and stack.process.poll() is not None:
            break
        time.sleep(0.2)
    tail = "\n".join(stack.lines[-60:]) if stack is not None else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


class Stack:
    """``manage.py run_local`` running in its own session, as from a terminal."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.url = f"http://127.0.0.1:{free_port()}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_local", "--address", self.url.removeprefix("http://")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def pids(self) -> dict[str, int]:
        return {m[1]: int(m[2]) for m in (STARTED.match(line) for line in self.lines) if m}

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:  # loopback only
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def ready(self) -> bool:
        try:
            web_ready = self.get("/readyz")[0] == 200
        except OSError:
            return False
        text = "\n".join(self.lines)
        return web_ready and "celery@" in text and " ready." in text and "beat: Starting" in text

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to every process of the foreground group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def stop(self) -> None:
        """Whatever happened in the test, leave nothing of ours running."""
        if self.process.poll() is None:
            self.ctrl_c()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        for pid in self.pids().values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.reader.join(timeout=10)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database migrated once for the module, its periodic tasks every second; each test
    starts from a copy (a Django process start costs seconds on a busy machine)."""
    folder = tmp_path_factory.mktemp("migrated")
    env = stack_env(folder)
    manage(env, "migrate", "-v0")
    shell(env, EVERY_SECOND)
    return folder / "analemma.sqlite3"


def copy_database(migrated: Path, folder: Path) -> dict[str, str]:
    shutil.copyfile(migrated, folder / "analemma.sqlite3")  # no -wal file: its last process exited
    return stack_env(folder)


@contextlib.contextmanager
def running_stack(migrated: Path, folder: Path, **extra_env: str) -> Iterator[Stack]:
    env = {**copy_database(migrated, folder), **extra_env}
    stack = Stack(folder, env)
    try:
        wait_for(stack.ready, 90, "the web server, the worker and beat to start", stack)
        yield stack
    finally:
        stack.stop()
