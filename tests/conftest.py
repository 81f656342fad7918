"""Suite-wide fixtures. The database is a real PostgreSQL server started here, unless
ANALEMMA_TEST_DB=sqlite asks for SQLite; S3 tests talk to moto's server on loopback."""

from __future__ import annotations

import contextlib
import importlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analemma_sdk.statebag import CountingStore, LocalFolderStore, reset_hydrators

from .servers import postgres_server, redis_server, s3_server

# Fixtures shared by test modules live in helper modules, registered here.
pytest_plugins = ["tests.run_stack"]

_SERVERS = pytest.StashKey[contextlib.ExitStack]()
_DATABASE = pytest.StashKey[str]()
CORPUS_DIR = Path(__file__).resolve().parent / "data" / "corpus"


def pytest_configure(config: pytest.Config) -> None:
    """Point Django at a fresh PostgreSQL server before anything opens a connection."""
    from django.conf import settings
    from django.db import connections

    if os.environ.get("ANALEMMA_TEST_DB", "postgres") == "sqlite":
        url = "sqlite://:memory:"
    elif _distributing(config):
        url = "none: the workers run the tests, each on its own server"
    else:
        import dj_database_url

        stack = contextlib.ExitStack()
        config.stash[_SERVERS] = stack
        url = stack.enter_context(postgres_server())
        settings.DATABASES["default"]["OPTIONS"] = {}  # drop the SQLite tuning
        settings.DATABASES["default"].update(dj_database_url.parse(url))
    # Drop connection objects made from the previous value; they are rebuilt on next use.
    for connection in connections.all(initialized_only=True):
        connection.close()
        del connections[connection.alias]
    connections.__dict__.pop("settings", None)
    config.stash[_DATABASE] = url


def _distributing(config: pytest.Config) -> bool:
    """True in pytest-xdist's controller process, which hands tests to workers and runs none."""
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", None))


def pytest_unconfigure(config: pytest.Config) -> None:
    stack = config.stash.get(_SERVERS, None)
    if stack is not None:
        stack.close()


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {config.stash.get(_DATABASE, '?').split('@')[-1]}"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # moto accepts any key
    )


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    name = f"analemma-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def statebag_storage(settings: Any) -> Iterator[Any]:
    """Points the service's "statebag" storage elsewhere for one test: ``use(folder=path)``
    for a local folder, ``use(bucket=..., endpoint=...)`` for S3 (moto's keys)."""
    from statebag.services.stores import statebag_store

    def use(*, folder: Path | None = None, bucket: str = "", endpoint: str = "") -> None:
        if folder is not None:
            backend = {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(folder)},
            }
        else:
            backend = {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {
                    "bucket_name": bucket,
                    "location": "svc",
                    "endpoint_url": endpoint,
                    "region_name": "us-east-1",
                    "access_key": "testing",
                    "secret_key": "testing",  # moto accepts any key
                },
            }
        settings.STORAGES = {**settings.STORAGES, "statebag": backend}
        statebag_store.cache_clear()

    yield use
    statebag_store.cache_clear()


@pytest.fixture
def service_store(statebag_storage: Any, tmp_path: Path) -> Iterator[Any]:
    """The service's store in a folder of this test's own, with the service's hydrators made
    afresh on it. A module may define its own ``service_store``, which then applies there."""
    from statebag.services.hydrators import reset_service_hydrators
    from statebag.services.stores import statebag_store

    statebag_storage(folder=tmp_path / "service")
    reset_service_hydrators()
    yield statebag_store()
    reset_service_hydrators()


@pytest.fixture
def local_store(tmp_path: Path) -> LocalFolderStore:
    return LocalFolderStore(tmp_path / "store")


@pytest.fixture
def counting_store(local_store: LocalFolderStore) -> CountingStore:
    return CountingStore(local_store)


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Iterator[None]:
    """Shared hydrators and the cache outlive a test; the database does not. Reset both."""
    from django.core.cache import cache

    reset_hydrators()
    cache.clear()
    yield
    reset_hydrators()
    cache.clear()


@pytest.fixture
def rollout_defaults(transactional_db: None) -> None:
    """The environments and flags the rollout app's data migration seeds. Tests that use a
    real transaction start from an emptied database, so they ask for this; the others see
    the migrated database as it is."""
    from django.apps import apps

    importlib.import_module("rollout.migrations.0005_seed_defaults").seed(apps, None)


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """Real agent conversations, in the repository (tests/data/corpus/README.md)."""
    return CORPUS_DIR
