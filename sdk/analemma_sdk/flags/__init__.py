"""Feature flags for Lambdas: a cached flag-set document, evaluated locally.

from analemma_sdk import FlagClient

flags = FlagClient("https://analemma.example.com", os.environ["ANALEMMA_SDK_KEY"])
if flags.bool("use_batching", unit=execution_id):
    ...
"""

from .client import ClientStatus, FlagClient
from .document import FlagDetails, InvalidDocumentError

__all__ = ["ClientStatus", "FlagClient", "FlagDetails", "InvalidDocumentError"]
