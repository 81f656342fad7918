"""Typed errors of the state bag engine. Every failure a caller can act on has its own class."""


class StateBagError(Exception):
    """Base class of every state bag error."""


class InvalidValueError(StateBagError, ValueError):
    """A state value cannot be encoded as canonical JSON (NaN, non-string keys, cycles...)."""


class MalformedPointerError(StateBagError, ValueError):
    """A pointer in a payload does not have the documented shape."""


class InvalidKeyError(StateBagError, ValueError):
    """An object key or identifier would escape the store's root or is not allowed."""


class BlobNotFoundError(StateBagError, KeyError):
    """The store has no object under the requested key."""


class CorruptBlobError(StateBagError):
    """Stored bytes do not decode to the value their pointer promises (digest, size or frame)."""


class CorruptPackError(CorruptBlobError):
    """A pack's header, index or footer is damaged or truncated."""


class DecompressionBombError(CorruptBlobError):
    """A frame expands past its recorded size or past the configured ceiling."""


class BlobTooLargeError(StateBagError):
    """A value or a pointer's declared size is above the configured ceiling."""


class PayloadTooLargeError(StateBagError):
    """The control-plane payload cannot be brought under its budget."""


class UnknownDictionaryError(StateBagError):
    """A frame references a compression dictionary that cannot be found."""


class ForeignDictionaryError(UnknownDictionaryError):
    """A frame names a compression dictionary its owner may not use: another owner's, or a
    shared one from an earlier version. It is never loaded."""


class CodecUnavailableError(StateBagError):
    """A frame needs a codec whose library is not installed."""


class StaleReferenceError(StateBagError):
    """A blob the dehydration meant to reuse is no longer stored (collected meanwhile)."""

    def __init__(self, message: str, digests: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.digests = digests


class ManifestConflictError(StateBagError):
    """The execution's head moved since the caller read it (a lost race)."""


class TransactionAbortedError(StateBagError):
    """The commit's transaction was aborted (expired and reaped) before it committed."""


class UnknownTransactionError(StateBagError, LookupError):
    """The service has no such transaction for this write key: never prepared, or another
    owner's (the two answers are the same on purpose)."""


class ManifestServiceUnavailableError(StateBagError):
    """The manifest service could not be reached, or failed (5xx), within the timeout."""


class WriteKeyRejectedError(StateBagError):
    """The manifest service refused the write key: wrong, revoked, or for another owner."""


class UploadRejectedError(StateBagError):
    """The service found uploaded objects missing or different from what prepare declared."""


class ManifestRequestError(StateBagError, ValueError):
    """The manifest service refused a request as malformed."""


class ManifestIntegrityError(StateBagError):
    """A stored manifest does not match its hash (its entries, parents or identity changed
    after it was committed), or cannot be checked. Its contents are never used."""


class CorruptEnvelopeError(CorruptPackError):
    """An envelope segment (``o/<owner>/e/...``) is damaged, truncated, in an unknown format, or
    does not hold what its key names."""


class EnvelopeIntegrityError(ManifestIntegrityError):
    """An envelope segment decodes but does not check: a version's hash, a parent link, a kept
    value's digest, or the run of versions it holds. None of its contents are used."""


class StoreReadOnlyError(StateBagError):
    """The store takes no direct writes: the service's store, read through the service, is
    written only at the upload URLs of a prepared transaction."""
