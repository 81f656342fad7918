"""Errors of the service side of the state bag."""

from analemma_sdk.statebag import StateBagError


class ManifestConflictError(StateBagError):
    """The execution's head moved since the caller read it (a lost race)."""


class DanglingPointerError(StateBagError):
    """A manifest would reference an object the service has no record of."""


class TwoPhaseCommitUnavailableError(StateBagError):
    """use_2pc was asked for but cannot run here."""
