"""Blob stores: where packs and objects live. A local folder by default; S3 in s3.py.

A store is a small protocol so the engine, the service (through django-storages) and the
tests can all plug in their own. Keys are validated by every store, not only by callers.

Loading this module costs a cold start next to nothing: the local folder store works with
``os`` alone (``pathlib`` and ``tempfile`` pull in regular expressions, ``shutil``, ``random``
and more), and ``BlobStore``, a ``typing.Protocol``, is built when first asked for.
"""

from __future__ import annotations

import _thread
import os

from .errors import BlobNotFoundError, InvalidKeyError
from .keys import validate_key

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Protocol

    class BlobStore(Protocol):
        def put(self, key: str, data: bytes) -> None: ...
        def get(self, key: str) -> bytes: ...
        def get_range(self, key: str, offset: int, length: int) -> bytes: ...
        def exists(self, key: str) -> bool: ...
        def delete(self, key: str) -> None: ...
        def list(self, prefix: str = "") -> Iterator[str]: ...


def __getattr__(name: str) -> object:
    if name == "BlobStore":
        return _blob_store_protocol()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _blob_store_protocol() -> type:
    """The run-time ``BlobStore``: the protocol above, checkable with ``isinstance``."""
    from typing import Protocol, runtime_checkable

    @runtime_checkable
    class BlobStore(Protocol):
        def put(self, key: str, data: bytes) -> None: ...
        def get(self, key: str) -> bytes: ...
        def get_range(self, key: str, offset: int, length: int) -> bytes: ...
        def exists(self, key: str) -> bool: ...
        def delete(self, key: str) -> None: ...
        def list(self, prefix: str = "") -> Iterator[str]: ...

    BlobStore.__module__ = __name__
    globals()["BlobStore"] = BlobStore  # built once; later imports find it here
    return BlobStore


def _check_range(offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError("offset and length must not be negative")


class LocalFolderStore:
    """Objects as files under one root folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = os.path.realpath(root)
        self._inside = self._root if self._root.endswith(os.sep) else self._root + os.sep
        os.makedirs(self._root, exist_ok=True)

    @property
    def root(self) -> Path:
        from pathlib import Path  # for callers; the store itself works with os.path

        return Path(self._root)

    def __repr__(self) -> str:
        return f"LocalFolderStore({self._root!r})"

    def _path(self, key: str) -> str:
        path = os.path.realpath(os.path.join(self._root, validate_key(key)))
        if path != self._root and not path.startswith(self._inside):
            raise InvalidKeyError(f"key {key!r} escapes the store root")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp, fd = _temp_file(folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        _check_range(offset, length)
        try:
            with open(self._path(key), "rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def modified(self, key: str) -> float | None:
        """Last write as seconds since the epoch (audits use it); None when unknown."""
        try:
            return os.stat(self._path(key)).st_mtime
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str = "") -> Iterator[str]:
        keys = []
        for folder, _, names in os.walk(self._root):
            relative = os.path.relpath(folder, self._root)
            for name in names:
                if name.startswith(".tmp-") or not os.path.isfile(os.path.join(folder, name)):
                    continue
                key = name if relative == "." else f"{relative.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort(key=lambda key: key.split("/"))  # folder by folder, as paths sort
        return iter(keys)


def _temp_file(folder: str) -> tuple[str, int]:
    """A new file only this process can have opened, readable by its owner only (as
    ``tempfile.mkstemp`` makes them, without importing tempfile)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(folder, f".tmp-{os.urandom(8).hex()}")
        try:
            return tmp, os.open(tmp, flags, 0o600)
        except FileExistsError:
            continue


class MemoryStore:
    """A dict of objects: for tests and short-lived tools."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self._lock = _thread.allocate_lock()

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
        from collections import Counter

        self.inner = inner
        self.counts: Counter[str] = Counter()
        self._lock = _thread.allocate_lock()

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
