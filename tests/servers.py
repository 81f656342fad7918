"""Throwaway servers for the test suite, on loopback: PostgreSQL (a fresh cluster in a temp
folder), Redis, and an S3-protocol server (moto in server mode). Each stops when the session
ends.

No server is started on a port that was free a moment ago (another process could take it in
between): PostgreSQL listens only on a Unix socket in its own folder, moto binds port 0 and
reports the port it got, and Redis, which can do neither on TCP, is started again on another
port when the one it was given turns out to be taken."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote


def free_port() -> int:
    """A port that was free when asked; whoever binds it next must cope with losing a race."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_socket() -> socket.socket:
    """A socket already bound to a free loopback port and listening: hand it to a server
    (gunicorn's ``--bind fd://N``) and the port cannot be lost to anyone else."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError(
        "PostgreSQL is not installed: run scripts/ensure-services.sh (apt-get install postgresql)"
    )


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a database URL of a fresh cluster, reached through a Unix socket in its own
    folder (no TCP port); remove it afterwards."""
    bindir = _postgres_bin()
    workdir = Path(tempfile.mkdtemp(prefix="analemma-pg-"))
    datadir = workdir / "data"
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
    port = 5432  # only names the socket file, which lives in workdir
    subprocess.run(
        _as_postgres_user(
            [str(bindir / "initdb"), "-D", str(datadir), "-U", "analemma", "--auth=trust", "-E", "UTF8"]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    options = f"-p {port} -k {workdir} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    subprocess.run(
        _as_postgres_user(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(datadir),
                "-o",
                options,
                "-l",
                str(workdir / "log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"postgres://analemma@{quote(str(workdir), safe='')}:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres_user([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """Yield the endpoint URL of a moto S3-protocol server on loopback, on the port it bound."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yield the URL of a throwaway Redis server on loopback (no persistence)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "Redis is not installed: run scripts/ensure-services.sh (apt-get install redis-server)"
        )
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if _answers_ping(proc, port):
            break
        proc.kill()
        proc.wait(timeout=10)  # most likely the port was taken meanwhile: try another
    else:
        raise RuntimeError("the Redis test server did not start")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _answers_ping(proc: subprocess.Popen[bytes], port: int) -> bool:
    """True once our server answers on ``port``; False if it exited (or never answered)."""
    deadline = time.monotonic() + 15
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc.poll() is None  # and not somebody else's server
        except OSError:
            pass
        time.sleep(0.05)
    return False


ROOT = Path(__file__).resolve().parent.parent
SERVICE_SHAPES = ("embedded", "gunicorn")


class ServiceProcess:
    """The service running in its own process(es) on a SQLite file under ``folder``, and a
    way to run ``manage.py`` against the same database from yet another process."""

    def __init__(self, url: str, env: dict[str, str], headers: dict[str, str]) -> None:
        self.url, self.env, self.headers = url, env, headers

    def manage(self, *args: str) -> str:
        import sys

        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.url + path, headers={**self.headers, **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # loopback only
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@contextlib.contextmanager
def service_process(shape: str, folder: Path, redis_url: str = "") -> Iterator[ServiceProcess]:
    """Run the service as ``make run`` does ("embedded": local settings, runserver, one
    process) or as production does ("gunicorn": production settings, two workers), with
    ``redis_url`` as its cache or none (each process caches in its own memory)."""
    import secrets
    import sys

    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(ANALEMMA_VAR_DIR=str(folder), LOG_LEVEL="WARNING", REDIS_URL=redis_url)
    headers: dict[str, str] = {}
    if shape == "gunicorn":
        (folder / "static").mkdir(exist_ok=True)
        env.update(
            DJANGO_SETTINGS_MODULE="analemma.settings.production",
            SECRET_KEY=secrets.token_urlsafe(64),
            ALLOWED_HOSTS="127.0.0.1",
            DATABASE_URL=f"sqlite:///{folder}/analemma.sqlite3",
            STATIC_ROOT=str(folder / "static"),
        )
        headers["X-Forwarded-Proto"] = "https"  # behind its TLS proxy
    else:
        env["DJANGO_SETTINGS_MODULE"] = "analemma.settings.local"
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    with contextlib.ExitStack() as stack:
        if shape == "gunicorn":
            listener = stack.enter_context(listening_socket())
            port = listener.getsockname()[1]
            command = ["-m", "gunicorn", "analemma.wsgi", "--bind", f"fd://{listener.fileno()}"]
            command += ["--workers", "2", "--log-level", "warning"]
            server = subprocess.Popen(
                [sys.executable, *command], cwd=ROOT, env=env, pass_fds=(listener.fileno(),)
            )
        else:
            port = free_port()
            command = ["manage.py", "runserver", f"127.0.0.1:{port}", "--noreload", "--skip-checks"]
            server = subprocess.Popen(
                [sys.executable, *command], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
            )
        stack.callback(server.wait, 10)
        stack.callback(server.terminate)
        running = ServiceProcess(f"http://127.0.0.1:{port}", env, headers)
        deadline = time.monotonic() + 60
        while True:
            try:
                running.get("/api/v1/flagset")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the service ({shape}) did not start") from None
                time.sleep(0.2)
        yield running
