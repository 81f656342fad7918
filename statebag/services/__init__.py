"""Writes and engine wiring of the state bag; the API, tasks, admin and commands call these."""

from .chain import manifest_chain, manifest_verify
from .stores import statebag_store
from .versioning import StateVersioningService, manifest_state

__all__ = [
    "StateVersioningService",
    "manifest_chain",
    "manifest_state",
    "manifest_verify",
    "statebag_store",
]
