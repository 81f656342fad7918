"""Errors of the service side of the state bag (the shared ones live in the SDK)."""

from analemma_sdk.statebag import StateBagError
from analemma_sdk.statebag.errors import (
    ManifestConflictError,
    StaleReferenceError,
    TransactionAbortedError,
)

__all__ = [
    "DanglingPointerError",
    "ManifestConflictError",
    "StaleReferenceError",
    "TransactionAbortedError",
]


class DanglingPointerError(StateBagError):
    """A manifest would reference an object the service has no record of."""
