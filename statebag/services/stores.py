"""The service's blob store, built from django-storages' "statebag" storage.

The two backends we deploy get a native store that keeps ranged reads (a local folder, and
S3 reusing the boto3 client django-storages configured); any other Storage works through a
generic adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages

from analemma_sdk.statebag import BlobNotFoundError, BlobStore, LocalFolderStore
from analemma_sdk.statebag.keys import validate_key


class DjangoStorageStore:
    """Any Django Storage as a BlobStore. Ranged reads open the file and seek."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def put(self, key: str, data: bytes) -> None:
        key = validate_key(key)
        if self.storage.exists(key):
            self.storage.delete(key)
        self.storage.save(key, ContentFile(data))

    def get(self, key: str) -> bytes:
        try:
            with self.storage.open(validate_key(key), "rb") as handle:
                data: bytes = handle.read()
                return data
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with self.storage.open(validate_key(key), "rb") as handle:
                handle.seek(offset)
                data: bytes = handle.read(length)
                return data
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def exists(self, key: str) -> bool:
        return bool(self.storage.exists(validate_key(key)))

    def delete(self, key: str) -> None:
        self.storage.delete(validate_key(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        def walk(folder: str) -> Iterator[str]:
            dirs, files = self.storage.listdir(folder)
            for name in files:
                yield f"{folder}/{name}" if folder else name
            for name in dirs:
                yield from walk(f"{folder}/{name}" if folder else name)

        return (key for key in walk("") if key.startswith(prefix))


def store_for_storage(storage: Storage) -> BlobStore:
    if isinstance(storage, FileSystemStorage):
        return LocalFolderStore(storage.location)
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # pragma: no cover - django-storages is a requirement
        S3Storage = None
    if S3Storage is not None and isinstance(storage, S3Storage):
        from analemma_sdk.statebag.s3 import S3Store

        return S3Store(storage.bucket_name, storage.location, client=storage.connection.meta.client)
    return DjangoStorageStore(storage)


@cache
def statebag_store() -> BlobStore:
    """The process-wide store of the "statebag" storage alias."""
    return store_for_storage(storages["statebag"])
