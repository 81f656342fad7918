"""Feature flags for Lambdas: a cached flag-set document, evaluated locally.

from analemma_sdk import FlagClient

flags = FlagClient("https://analemma.example.com", os.environ["ANALEMMA_SDK_KEY"])
if flags.bool("use_batching", unit=execution_id):
    ...

Names load on first use, so importing ``analemma_sdk.flags.spec`` (the document's definition,
which the state bag engine reads too) costs only that module.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .client import ClientStatus, FlagClient, default_client, set_default_client
    from .document import FlagDetails
    from .spec import InvalidDocumentError

__all__ = [
    "ClientStatus",
    "FlagClient",
    "FlagDetails",
    "InvalidDocumentError",
    "default_client",
    "set_default_client",
]
_HOMES = {
    "ClientStatus": "client",
    "FlagClient": "client",
    "default_client": "client",
    "set_default_client": "client",
    "FlagDetails": "document",
    "InvalidDocumentError": "spec",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'analemma_sdk.flags' has no attribute {name!r}")
    import importlib  # only when a name is first used

    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
