"""State bag engine: offload large state fields into content-addressed packs.

    from analemma_sdk.statebag import StateHydrator, get_hydrator

Only the standard library is imported here; zstandard and boto3 load when first used.
"""

from .bag import StateBag
from .codec import ZstdDictionary, train_dictionary
from .config import META_KEY
from .errors import (
    BlobNotFoundError,
    BlobTooLargeError,
    CodecUnavailableError,
    CorruptBlobError,
    CorruptPackError,
    DecompressionBombError,
    ForeignDictionaryError,
    InvalidKeyError,
    InvalidValueError,
    MalformedPointerError,
    ManifestIntegrityError,
    PayloadTooLargeError,
    StateBagError,
    UnknownDictionaryError,
    UnknownTransactionError,
)
from .factory import get_hydrator, reset_hydrators, store_from_url
from .hydrator import DehydrationResult, StateHydrator
from .manifests import ManifestDraft, ManifestRecord, ManifestStore, PackWrite, manifest_hash
from .stores import BlobStore, CountingStore, LocalFolderStore, MemoryStore
from .temperature import Temperature, TemperatureRegistry

__all__ = [
    "META_KEY",
    "BlobNotFoundError",
    "BlobStore",
    "BlobTooLargeError",
    "CodecUnavailableError",
    "CorruptBlobError",
    "CorruptPackError",
    "CountingStore",
    "DecompressionBombError",
    "DehydrationResult",
    "ForeignDictionaryError",
    "InvalidKeyError",
    "InvalidValueError",
    "LocalFolderStore",
    "MalformedPointerError",
    "ManifestIntegrityError",
    "ManifestDraft",
    "ManifestRecord",
    "ManifestStore",
    "MemoryStore",
    "PackWrite",
    "PayloadTooLargeError",
    "StateBag",
    "StateBagError",
    "StateHydrator",
    "Temperature",
    "TemperatureRegistry",
    "UnknownDictionaryError",
    "UnknownTransactionError",
    "ZstdDictionary",
    "get_hydrator",
    "manifest_hash",
    "reset_hydrators",
    "store_from_url",
    "train_dictionary",
]
