"""Suite-wide fixtures. The database is a real PostgreSQL server started here, unless
ANALEMMA_TEST_DB=sqlite asks for SQLite; S3 tests talk to moto's server on loopback."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analemma_sdk.statebag import CountingStore, LocalFolderStore, reset_hydrators

from .servers import postgres_server, s3_server

CORPUS_DIR = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "tau-airline-dev"


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> Iterator[None]:
    from django.conf import settings

    if os.environ.get("ANALEMMA_TEST_DB", "postgres") == "sqlite":
        settings.DATABASES["default"].update(ENGINE="django.db.backends.sqlite3", NAME=":memory:")
        yield
        return
    import dj_database_url

    with postgres_server() as url:
        # Update in place: Django has already filled this dict with its defaults.
        settings.DATABASES["default"].update(dj_database_url.parse(url))
        yield


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto accepts any key
    )


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    name = f"analemma-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def local_store(tmp_path: Path) -> LocalFolderStore:
    return LocalFolderStore(tmp_path / "store")


@pytest.fixture
def counting_store(local_store: LocalFolderStore) -> CountingStore:
    return CountingStore(local_store)


@pytest.fixture(autouse=True)
def _fresh_hydrators() -> Iterator[None]:
    reset_hydrators()
    yield
    reset_hydrators()


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not CORPUS_DIR.is_dir():
        pytest.fail(f"corpus not found at {CORPUS_DIR}")
    return CORPUS_DIR
