"""State bag engine: offload large state fields into content-addressed packs.

    from analemma_sdk.statebag import StateHydrator, get_hydrator

Each name loads its module on first access, so ``from analemma_sdk.statebag import
get_hydrator`` costs a Lambda's cold start only the factory; the engine loads when a hydrator
is first built. Only the standard library is imported; zstandard, boto3 and orjson load when
first used.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
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
    from .manifest_protocols import ManifestStore
    from .manifests import ManifestDraft, ManifestRecord, PackWrite, manifest_hash
    from .stores import BlobStore, CountingStore, LocalFolderStore, MemoryStore
    from .temperature import Temperature, TemperatureRegistry

# Where each public name lives.
_HOMES = {
    "StateBag": "bag",
    "ZstdDictionary": "codec",
    "train_dictionary": "codec",
    "META_KEY": "config",
    "BlobNotFoundError": "errors",
    "BlobTooLargeError": "errors",
    "CodecUnavailableError": "errors",
    "CorruptBlobError": "errors",
    "CorruptPackError": "errors",
    "DecompressionBombError": "errors",
    "ForeignDictionaryError": "errors",
    "InvalidKeyError": "errors",
    "InvalidValueError": "errors",
    "MalformedPointerError": "errors",
    "ManifestIntegrityError": "errors",
    "PayloadTooLargeError": "errors",
    "StateBagError": "errors",
    "UnknownDictionaryError": "errors",
    "UnknownTransactionError": "errors",
    "get_hydrator": "factory",
    "reset_hydrators": "factory",
    "store_from_url": "factory",
    "DehydrationResult": "hydrator",
    "StateHydrator": "hydrator",
    "ManifestDraft": "manifests",
    "ManifestRecord": "manifests",
    "ManifestStore": "manifest_protocols",
    "PackWrite": "manifests",
    "manifest_hash": "manifests",
    "BlobStore": "stores",
    "CountingStore": "stores",
    "LocalFolderStore": "stores",
    "MemoryStore": "stores",
    "Temperature": "temperature",
    "TemperatureRegistry": "temperature",
}

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


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'analemma_sdk.statebag' has no attribute {name!r}")
    value = getattr(__import__(home, globals(), None, [name], 1), name)  # from .<home> import <name>
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
