"""`make run`: the embedded default, whole, in one terminal.

First it prepares the database (migrations, the admin account, the demo unless
ANALEMMA_DEMO=false), then starts three processes and prints each of their lines prefixed with
its name:

* ``web``: Django's server on ``--address``;
* ``worker``: a Celery worker consuming every queue the settings route tasks to;
* ``beat``: Celery beat sending the periodic tasks of django-celery-beat's table.

They share the SQLite database, the blob folder and the broker folder under ANALEMMA_VAR_DIR.

Ctrl-C (SIGINT) or SIGTERM is passed on once to each process (the worker then finishes the
tasks it is running); whatever still runs ``--stop-timeout`` seconds later is killed, and a
second Ctrl-C kills at once. If one of the three exits by itself, the others are stopped too
and the command fails with that process's exit status.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

POLL_SECONDS = 0.1


@dataclass
class Child:
    name: str
    argv: list[str]
    stop_signal: int = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = field(default=None, repr=False)


def exit_status(returncode: int) -> int:
    """A shell's view of how a process ended: its code, 128 + the signal that killed it, and
    1 for a clean exit, since a process of the stack exiting at all is a failure."""
    if returncode < 0:
        return 128 - returncode
    return returncode or 1


def _die_with_parent() -> None:
    """Runs in each child before it starts: ask Linux to send it SIGTERM when the supervisor
    dies, so a supervisor killed outright (SIGKILL) leaves nothing running."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Command(BaseCommand):
    help = "Run the embedded default: the web server, a Celery worker and Celery beat, in one terminal."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--address",
            default=os.environ.get("ANALEMMA_BIND") or "127.0.0.1:8000",
            help="host:port the web server listens on (default: $ANALEMMA_BIND or 127.0.0.1:8000)",
        )
        parser.add_argument("--concurrency", type=int, default=2, help="worker processes running tasks")
        parser.add_argument("--loglevel", default="INFO", help="the worker's and beat's log level")
        parser.add_argument(
            "--stop-timeout", type=float, default=30.0, help="seconds to wait for each process to stop"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not getattr(settings, "ANALEMMA_EMBEDDED", False):
            raise CommandError("run_local only runs with the embedded (local) settings")
        address = str(options["address"])
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        call_command("bootstrap_local", address=address)
        if getattr(settings, "ANALEMMA_DEMO", False):
            call_command("seed_demo")
        connections.close_all()  # the children open their own
        python, manage = sys.executable, str(settings.BASE_DIR / "manage.py")
        celery = [python, "-m", "celery", "-A", "analemma"]
        children = [
            # SIGINT is runserver's Ctrl-C: it exits 0 rather than dying of a signal.
            Child(
                "web", [python, manage, "runserver", address, "--noreload", "--skip-checks"], signal.SIGINT
            ),
            Child(
                "worker",
                [
                    *celery,
                    "worker",
                    "--loglevel",
                    str(options["loglevel"]),
                    "--concurrency",
                    str(options["concurrency"]),
                    # One worker on one machine: no peers to sync with or watch.
                    "--without-mingle",
                    "--without-gossip",
                ],
            ),
            Child(
                "beat",
                [
                    *celery,
                    "beat",
                    "--scheduler",
                    "django_celery_beat.schedulers:DatabaseScheduler",
                    "--loglevel",
                    str(options["loglevel"]),
                ],
            ),
        ]
        code = Supervisor(children, sys.stdout, float(options["stop_timeout"])).run()
        if code:
            raise CommandError("stopped because a process exited (see above)", returncode=code)


class Supervisor:
    def __init__(self, children: list[Child], out: IO[str], stop_timeout: float) -> None:
        self.children = children
        self.out = out
        self.stop_timeout = stop_timeout
        self.write_lock = threading.Lock()
        self.stop_signals = 0
        self.width = max(len(child.name) for child in children)

    def say(self, name: str, text: str) -> None:
        with self.write_lock:
            self.out.write(f"{name:<{self.width}} | {text}\n")
            self.out.flush()

    def _requested(self, signum: int, frame: Any) -> None:
        self.stop_signals += 1
        if self.stop_signals > 1:
            self._kill_all(wait=False)  # a second Ctrl-C: no more waiting

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._requested) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run()
        finally:
            self._kill_all(wait=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "analemma.settings.local"),
            "PYTHONUNBUFFERED": "1",  # lines as they are written, not when a buffer fills
        }
        # Each in a session of its own: the terminal's Ctrl-C reaches only this process, which
        # passes it on once (a worker that got two would stop without finishing its tasks).
        # All are started before any reader thread, as a child must not fork while threads run.
        for child in self.children:
            child.process = subprocess.Popen(
                child.argv,
                cwd=settings.BASE_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # safe: no thread runs yet (see above)
            )
        for child in self.children:
            assert child.process is not None
            self.say(child.name, f"started (pid {child.process.pid}): {' '.join(child.argv[1:])}")
            child.reader = threading.Thread(target=self._relay, args=(child,), daemon=True)
            child.reader.start()
        code = 0
        while not self.stop_signals:
            exited = next((c for c in self.children if c.process and c.process.poll() is not None), None)
            if exited is not None:
                assert exited.process is not None
                code = exit_status(exited.process.returncode)
                self.say(exited.name, f"exited with code {exited.process.returncode}; stopping the others")
                break
            time.sleep(POLL_SECONDS)
        self._stop_all()
        return code

    def _relay(self, child: Child) -> None:
        assert child.process is not None and child.process.stdout is not None
        for raw in child.process.stdout:
            self.say(child.name, raw.decode("utf-8", "replace").rstrip("\r\n"))

    def _stop_all(self) -> None:
        running = [c for c in self.children if c.process and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            self.say(child.name, "stopping")
            try:
                child.process.send_signal(child.stop_signal)  # the main process only: it stops its own
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.stop_timeout
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(child.name, f"still running after {self.stop_timeout:g} s: killed")
        self._kill_all(wait=True)
        for child in self.children:
            if child.reader is not None:
                child.reader.join(timeout=5)  # the rest of its output
            if child.process is not None and child.process.returncode is not None:
                self.say(child.name, f"stopped (exit code {child.process.returncode})")

    def _kill_all(self, *, wait: bool) -> None:
        """SIGKILL whatever is left of each process group (a worker's pool processes too)."""
        for child in self.children:
            if child.process is None:
                continue
            try:
                os.killpg(child.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if not wait:  # in a signal handler: the main thread may be waiting already
                continue
            try:
                child.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
