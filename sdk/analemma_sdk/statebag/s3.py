"""S3 (or any S3-protocol endpoint) store on boto3, imported when the store first makes a
request: building one (``STATEBAG_STORE_URL=s3://...``) costs a cold start nothing, and a
Lambda whose payload keeps its state inline never loads boto3 at all."""

from __future__ import annotations

import _thread

from .errors import BlobNotFoundError, InvalidKeyError
from .keys import validate_key
from .stores import _check_range

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Store:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix:
            validate_key(prefix.rstrip("/"))
        self.bucket = bucket
        self.prefix = prefix
        self._client = client
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        self._client_lock = _thread.allocate_lock()

    @property
    def client(self) -> Any:
        """The boto3 client, built on first use (boto3 is a heavy import)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    import boto3
                    from botocore.config import Config

                    self._client = boto3.client(
                        "s3",
                        endpoint_url=self._endpoint_url,
                        region_name=self._region_name,
                        config=Config(retries={"max_attempts": 4, "mode": "standard"}),
                    )
        return self._client

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _missing(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        return code in _MISSING_CODES

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError as exc:
            if self._missing(exc):
                raise BlobNotFoundError(key) from None
            raise
        body: bytes = response["Body"].read()
        return body

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        _check_range(offset, length)
        if length == 0:
            return b""
        try:
            response = self.client.get_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Range=f"bytes={offset}-{offset + length - 1}",
            )
        except self.client.exceptions.ClientError as exc:
            if self._missing(exc):
                raise BlobNotFoundError(key) from None
            if getattr(exc, "response", {}).get("Error", {}).get("Code") == "InvalidRange":
                return b""
            raise
        body: bytes = response["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError as exc:
            if self._missing(exc):
                return False
            raise
        return True

    def modified(self, key: str) -> float | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError:
            return None
        return float(head["LastModified"].timestamp())

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        if prefix:
            validate_key(prefix.rstrip("/"))
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                try:
                    yield validate_key(key)
                except InvalidKeyError:
                    continue  # objects this engine did not write
