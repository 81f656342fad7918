"""Blob stores: where packs and objects live. A local folder by default; S3 in s3.py.

A store is a small protocol so the engine, the service (through django-storages) and the
tests can all plug in their own. Keys are validated by every store, not only by callers.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .errors import BlobNotFoundError, InvalidKeyError
from .keys import validate_key

if TYPE_CHECKING:
    from pathlib import Path


@runtime_checkable
class BlobStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def get_range(self, key: str, offset: int, length: int) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "") -> Iterator[str]: ...


def _check_range(offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError("offset and length must not be negative")


class LocalFolderStore:
    """Objects as files under one root folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        from pathlib import Path  # only for local folders, not on S3 cold starts

        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalFolderStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidKeyError(f"key {key!r} escapes the store root")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        import tempfile  # see __init__

        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        _check_range(offset, length)
        try:
            with self._path(key).open("rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def modified(self, key: str) -> float | None:
        """Last write as seconds since the epoch (audits use it); None when unknown."""
        try:
            return self._path(key).stat().st_mtime
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[str]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key


class MemoryStore:
    """A dict of objects: for tests and short-lived tools."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self.objects[validate_key(key)] = bytes(data)

    def get(self, key: str) -> bytes:
        try:
            return self.objects[validate_key(key)]
        except KeyError:
            raise BlobNotFoundError(key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        _check_range(offset, length)
        return self.get(key)[offset : offset + length]

    def exists(self, key: str) -> bool:
        return validate_key(key) in self.objects

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(validate_key(key), None)

    def list(self, prefix: str = "") -> Iterator[str]:
        return iter(sorted(k for k in list(self.objects) if k.startswith(prefix)))


class CountingStore:
    """Wraps a store and counts requests by type and bytes moved (benchmarks, tests, metrics)."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, kind: str, nbytes: int = 0) -> None:
        with self._lock:
            self.counts[kind] += 1
            if nbytes:
                self.counts[f"{kind}_bytes"] += nbytes

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def put(self, key: str, data: bytes) -> None:
        self._count("puts", len(data))
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        self._count("gets")
        data = self.inner.get(key)
        self.counts["gets_bytes"] += len(data)
        return data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._count("gets")
        data = self.inner.get_range(key, offset, length)
        self.counts["gets_bytes"] += len(data)
        return data

    def exists(self, key: str) -> bool:
        self._count("heads")
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self._count("deletes")
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        self._count("lists")
        return self.inner.list(prefix)
