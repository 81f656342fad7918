"""Reading an owner's stored objects through the service, for clients that cannot reach the
store themselves (the embedded default keeps it in a local folder; a Lambda configured with
only the service's URL and a write key has no store access at all).

Only objects under the owner's own prefix ``o/<owner>/`` are answered. A key of another owner,
a malformed or path-climbing key and a missing object all get the same ObjectNotFound, so a key
cannot learn what other owners store. One answer holds at most ``MAX_READ_BYTES``: a longer
range is shortened (its Content-Range says so) and the client asks for the rest.
"""

from __future__ import annotations

import os
import re
from typing import Any

from django.core.files.storage import FileSystemStorage, storages

from analemma_sdk.statebag import BlobNotFoundError, InvalidKeyError
from analemma_sdk.statebag.keys import validate_key

from .stores import statebag_store

MAX_READ_BYTES = 8 * 1024 * 1024
# ASCII digits only (``\d`` takes any script's, which HTTP does not), and at most 19 of them:
# far past any object's size, and short of the length int() refuses to convert.
MAX_POSITION_DIGITS = 19
_RANGE_RE = re.compile(rf"bytes=([0-9]{{0,{MAX_POSITION_DIGITS}}})-([0-9]{{0,{MAX_POSITION_DIGITS}}})")
_LONG_RANGE_RE = re.compile(r"bytes=[0-9]*-[0-9]*")


class ObjectNotFound(LookupError):
    """No such object of this owner (the same for every reason, on purpose)."""

    def __init__(self) -> None:
        super().__init__("no such object")


class RangeNotSatisfiable(ValueError):
    """The range starts at or past the object's end."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the range starts past the object's end ({size} bytes)")
        self.size = size


class RangeInvalid(ValueError):
    """A Range header this endpoint does not take, or a read too large for one answer."""


class ObjectRead:
    __slots__ = ("data", "first", "size", "partial")

    def __init__(self, data: bytes, first: int, size: int, partial: bool) -> None:
        self.data = data
        self.first = first
        self.size = size
        self.partial = partial

    @property
    def content_range(self) -> str:
        return f"bytes {self.first}-{self.first + len(self.data) - 1}/{self.size}"


def owner_object_read(owner_id: str, key: str, range_header: str | None) -> ObjectRead:
    """Bytes of ``key`` for ``owner_id``: all of it without a Range header, else the one range
    asked for (``first-last``, ``first-`` or ``-suffix``), shortened to MAX_READ_BYTES."""
    try:
        validate_key(key)
    except InvalidKeyError:
        raise ObjectNotFound() from None
    if not key.startswith(f"o/{owner_id}/"):
        raise ObjectNotFound()
    size = _object_size(key)
    if range_header is None:
        if size > MAX_READ_BYTES:
            raise RangeInvalid(
                f"the object is {size} bytes, over the {MAX_READ_BYTES}-byte limit of one answer: "
                "ask for it in ranges"
            )
        first, last, partial = 0, size - 1, False
    else:
        first, last = byte_range(range_header, size)
        last = min(last, first + MAX_READ_BYTES - 1)
        partial = True
    length = last - first + 1
    try:
        data = statebag_store().get_range(key, first, length) if length else b""
    except (BlobNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ObjectNotFound() from None
    if len(data) != length:  # changed under us: objects are written whole and never in place
        raise RuntimeError(f"{key}: read {len(data)} bytes of {length}")
    return ObjectRead(data, first, size, partial)


def byte_range(header: str, size: int) -> tuple[int, int]:
    """(first, last), both inclusive, of a single byte range within an object of ``size``."""
    header = header.replace(" ", "")
    match = _RANGE_RE.fullmatch(header)
    if match is None and _LONG_RANGE_RE.fullmatch(header):
        raise RangeInvalid(f"a Range position has at most {MAX_POSITION_DIGITS} digits")
    if match is None or (not match[1] and not match[2]):
        raise RangeInvalid("Range must be one byte range: bytes=first-last, bytes=first- or bytes=-suffix")
    if not match[1]:  # the last N bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(size - suffix, 0), size - 1
    first = int(match[1])
    if match[2] and int(match[2]) < first:
        raise RangeInvalid("Range ends before it starts")
    if first >= size:
        raise RangeNotSatisfiable(size)
    return first, min(int(match[2]), size - 1) if match[2] else size - 1


def _object_size(key: str) -> int:
    storage: Any = storages["statebag"]  # the storage the service's store is built from
    # A folder has a size too (its directory entry's): it is no object, whatever the Range.
    if isinstance(storage, FileSystemStorage) and not os.path.isfile(storage.path(key)):
        raise ObjectNotFound()
    try:
        return int(storage.size(key))
    except (FileNotFoundError, NotADirectoryError):
        raise ObjectNotFound() from None
    except Exception as exc:
        error = getattr(exc, "response", {}).get("Error", {})  # S3: a missing key is a 404
        if str(error.get("Code")) in ("404", "NoSuchKey", "NotFound"):
            raise ObjectNotFound() from None
        raise
