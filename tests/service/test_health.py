"""/livez, /readyz and /healthz against real dependencies that are up, refuse, hang or are
missing: a Redis server, a port that accepts and never answers, a folder that is a file, a
database that cannot be opened or is not migrated. A failing check answers 503 naming it, and a
hung one answers within about the configured timeout."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..servers import free_port, listening_socket

ROOT = Path(__file__).resolve().parents[2]


def answer(response: Any) -> tuple[int, dict[str, Any]]:
    return response.status_code, json.loads(response.content)


@pytest.fixture(autouse=True)
def generous_timeout(settings: Any) -> None:
    """A busy test machine can take seconds to open a first connection; only the hung-broker
    test is about the timeout."""
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 10.0


@pytest.fixture
def filesystem_broker(settings: Any, tmp_path: Path) -> Path:
    """The embedded default's broker: kombu's filesystem transport in a folder."""
    folder = tmp_path / "broker"
    for name in ("queue", "control"):
        (folder / name).mkdir(parents=True)
    settings.CELERY_BROKER_URL = "filesystem://localhost/"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
    }
    return folder


@pytest.fixture
def store_folder(statebag_storage: Any, tmp_path: Path) -> Path:
    statebag_storage(folder=tmp_path / "blobs")
    return tmp_path / "blobs"


def test_livez__no_database_access_allowed__ok(client):
    # Without the django_db mark any query raises: the view makes none.
    assert answer(client.get("/livez")) == (200, {"status": "ok"})


@pytest.mark.django_db
def test_healthz__database_store_and_filesystem_broker_up__200_each_named(
    client, filesystem_broker, store_folder
):
    status, body = answer(client.get("/healthz"))
    assert status == 200, body
    assert body["status"] == "ok" and body["failed"] == []
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok",
        "store": "ok",
        "broker": "ok",
    }


@pytest.mark.django_db
def test_healthz__redis_broker_up__200(client, settings, redis_url, store_folder):
    settings.CELERY_BROKER_URL = redis_url
    status, body = answer(client.get("/healthz"))
    assert status == 200 and body["checks"]["broker"]["status"] == "ok", body


@pytest.mark.django_db
def test_healthz__broker_refuses_connections__503_naming_the_broker(client, settings, store_folder):
    settings.CELERY_BROKER_URL = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nobody listens
    status, body = answer(client.get("/healthz"))
    assert status == 503
    assert body["status"] == "failed" and body["failed"] == ["broker"]
    assert body["checks"]["database"]["status"] == body["checks"]["store"]["status"] == "ok"
    assert "hunter2" not in json.dumps(body)  # a password in the URL is never shown


@pytest.mark.django_db
def test_healthz__broker_accepts_but_never_answers__503_within_the_timeout(client, settings, store_folder):
    # A socket that completes TCP handshakes (the kernel does) and never says a word.
    with listening_socket() as hung:
        settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        settings.HEALTH_CHECK_TIMEOUT_SECONDS = 0.5
        started = time.monotonic()
        status, body = answer(client.get("/healthz"))
        took = time.monotonic() - started
    assert status == 503 and body["failed"] == ["broker"], body
    assert took < 2.5, f"a hung broker held /healthz for {took:.1f} s"


@pytest.mark.django_db
def test_healthz__broker_folder_missing__503_naming_the_broker(client, filesystem_broker, store_folder):
    (filesystem_broker / "queue").rmdir()
    status, body = answer(client.get("/healthz"))
    assert status == 503 and body["failed"] == ["broker"]
    assert "queue" in body["checks"]["broker"]["detail"]


@pytest.mark.django_db
def test_healthz__store_is_not_a_folder__503_naming_the_store(
    client, statebag_storage, filesystem_broker, tmp_path
):
    (tmp_path / "blobs").write_text("a file where the blob folder should be")
    statebag_storage(folder=tmp_path / "blobs" / "nested")
    status, body = answer(client.get("/healthz"))
    assert status == 503 and body["failed"] == ["store"]
    assert "not a folder" in body["checks"]["store"]["detail"]


@pytest.mark.django_db
def test_healthz__store_folder_not_made_yet__ok(client, statebag_storage, filesystem_broker, tmp_path):
    statebag_storage(folder=tmp_path / "not" / "yet")  # the first write makes it
    status, body = answer(client.get("/healthz"))
    assert status == 200, body


@pytest.mark.django_db
def test_healthz__s3_store_up__200(client, statebag_storage, filesystem_broker, s3_bucket, s3_endpoint):
    statebag_storage(bucket=s3_bucket, endpoint=s3_endpoint)
    status, body = answer(client.get("/healthz"))
    assert status == 200 and body["checks"]["store"]["status"] == "ok", body


@pytest.mark.django_db
def test_healthz__s3_bucket_missing__503_naming_the_store(
    client, statebag_storage, filesystem_broker, s3_endpoint
):
    statebag_storage(bucket="analemma-no-such-bucket", endpoint=s3_endpoint)
    status, body = answer(client.get("/healthz"))
    assert status == 503 and body["failed"] == ["store"], body
    assert "404" in body["checks"]["store"]["detail"] or "Not Found" in body["checks"]["store"]["detail"]


@pytest.mark.django_db
def test_readyz__migrated_database__200(client):
    status, body = answer(client.get("/readyz"))
    assert status == 200, body
    assert body["status"] == "ready" and set(body["checks"]) == {"database", "migrations"}


# A web process of its own, for what a test cannot do to its own database ----------------------
@contextlib.contextmanager
def web_server(database_url: str, folder: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_", "ANALEMMA_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="analemma.settings.local",
        ANALEMMA_VAR_DIR=str(folder),
        DATABASE_URL=database_url,
        HEALTH_CHECK_TIMEOUT_SECONDS="5",
    )
    with listening_socket() as listener:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "analemma.wsgi", "--bind", f"fd://{listener.fileno()}"],
            cwd=ROOT,
            env=env,
            pass_fds=(listener.fileno(),),
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        try:
            deadline = time.monotonic() + 60
            while get(url, "/livez")[0] != 200:
                assert server.poll() is None and time.monotonic() < deadline, "the web server did not start"
                time.sleep(0.2)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=20)


def get(url: str, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + path, timeout=10) as response:  # loopback only
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def test_health__database_cannot_be_opened__not_ready_and_unhealthy_but_alive(tmp_path):
    with web_server(f"sqlite:///{tmp_path}/missing-folder/db.sqlite3", tmp_path) as url:
        assert get(url, "/livez") == (200, {"status": "ok"})
        status, body = get(url, "/readyz")
        assert status == 503 and body["failed"] == ["database", "migrations"], body
        status, body = get(url, "/healthz")
        assert status == 503 and body["failed"] == ["database"], body
        assert "OperationalError" in body["checks"]["database"]["detail"]


def test_readyz__migrations_not_applied__503_until_migrated(tmp_path):
    database = f"sqlite:///{tmp_path}/db.sqlite3"
    with web_server(database, tmp_path) as url:
        status, body = get(url, "/readyz")
        assert status == 503 and body["failed"] == ["migrations"], body
        assert "not applied" in body["checks"]["migrations"]["detail"]
        assert get(url, "/healthz")[0] == 200  # the database answers; it is only not ready
        # When the database is migrated from another process, the server becomes ready
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_", "ANALEMMA_"))}
        env.update(DJANGO_SETTINGS_MODULE="analemma.settings.local", ANALEMMA_VAR_DIR=str(tmp_path))
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=ROOT,
            env={**env, "DATABASE_URL": database},
            check=True,
            timeout=300,
        )
        assert get(url, "/readyz")[0] == 200
