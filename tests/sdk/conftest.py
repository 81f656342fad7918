"""Fixtures the SDK's telemetry tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .flag_server import FlagServer, document, flag


@pytest.fixture
def telemetry_every_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """Telemetry as a client of a service has it by default, a flush sending whenever asked
    (tests of the interval set their own)."""
    monkeypatch.delenv("ANALEMMA_TELEMETRY", raising=False)
    monkeypatch.setenv("ANALEMMA_TELEMETRY_INTERVAL", "0")


@pytest.fixture
def served() -> Iterator[FlagServer]:
    """A flag server with one boolean flag, ``on``."""
    server = FlagServer(document(on=flag()))
    yield server
    server.close()
