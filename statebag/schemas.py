"""The statebag API's request and response bodies. Types, ranges and sizes are checked here,
before any service runs; a body that fails is a 400 with the field named. What depends on who
asks (which owner's prefix a key may name) is the services' to check."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import AfterValidator, Field, StrictInt

from analemma_sdk.statebag.keys import MAX_KEY_LEN, validate_id
from analemma_sdk.statebag.manifests import PackWrite, PrepareRequest
from analemma_sdk.statebag.packs import FrameRef

# Offsets and sizes stay within what every backend stores exactly (JSON's safe integers).
MAX_SIZE = 2**53 - 1

Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256, lowercase hex")]
Id = Annotated[
    str,
    Field(max_length=128, description="1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit"),
    AfterValidator(lambda value: validate_id("id", value)),
]
Size = Annotated[StrictInt, Field(ge=0, le=MAX_SIZE)]


class FrameIn(Schema):
    digest: Digest
    offset: Size
    length: Size
    codec: Literal["raw", "gzip", "zstd"]
    raw_size: Size
    dict_id: Annotated[str, Field(pattern=r"^[0-9a-f]{1,64}$")] | None = None

    def as_frame(self) -> FrameRef:
        return FrameRef(self.digest, self.offset, self.length, self.codec, self.raw_size, self.dict_id)


class PackIn(Schema):
    key: Annotated[str, Field(max_length=MAX_KEY_LEN, description="Under o/<owner_id>/.")]
    digest: Digest = Field(description="sha256 of the object's bytes.")
    size: Annotated[StrictInt, Field(gt=0, le=MAX_SIZE)]
    kind: Literal["pack", "object"] = "pack"
    frames: list[FrameIn] = Field(min_length=1)

    def as_write(self) -> PackWrite:
        return PackWrite(
            self.key, self.digest, self.size, tuple(f.as_frame() for f in self.frames), self.kind
        )


class PrepareIn(Schema):
    owner_id: Annotated[str, Field(max_length=128, description="Must be the write key's owner.")]
    workflow_id: Id
    execution_id: Id
    parents: list[Digest] = []
    packs: list[PackIn] = []
    reused: list[tuple[Annotated[str, Field(max_length=MAX_KEY_LEN)], Digest]] = Field(
        default=[], description="[object key, digest] of stored blobs the new version keeps."
    )
    idempotency_key: Annotated[str, Field(max_length=128)] | None = None
    upload: Literal["direct", "presigned"] = "direct"

    def as_request(self) -> PrepareRequest:
        return PrepareRequest(
            owner_id=self.owner_id,
            workflow_id=self.workflow_id,
            execution_id=self.execution_id,
            parents=tuple(self.parents),
            packs=tuple(p.as_write() for p in self.packs),
            reused=tuple(self.reused),
            idempotency_key=self.idempotency_key,
        )


class CommitIn(Schema):
    entries: dict[str, Any]
    cohort: dict[str, Any] = {}


class ManifestRecordOut(Schema):
    hash: str
    version: int
    entries: dict[str, Any] | None = Field(description="Set when an earlier commit is replayed.")


class UploadTarget(Schema):
    method: str
    url: str
    headers: dict[str, str]


class PreparedOut(Schema):
    txn_id: str | None
    expires_at: float
    committed: ManifestRecordOut | None = Field(
        None, description="Present when this idempotency key committed."
    )
    uploads: dict[str, UploadTarget] | None = Field(None, description="Present with upload=presigned.")


class AbortedOut(Schema):
    aborted: str


class ManifestOut(Schema):
    hash: str
    version: int
    execution_id: str
    entries: dict[str, Any]
    cohort: dict[str, Any]


class StoredOut(Schema):
    stored: str


class JobIn(Schema):
    owner_id: Id
    workflow_id: Id
    execution_id: Id
    state: dict[str, Any]
    parent: (
        Annotated[str, Field(max_length=64, description="Manifest hash the new version follows.")] | None
    ) = ""


class JobManifestOut(Schema):
    hash: str
    version: int


class JobOut(Schema):
    id: str
    url: str
    status: Literal["queued", "running", "succeeded", "failed"]
    owner_id: str
    workflow_id: str
    execution_id: str
    attempts: int
    manifest: JobManifestOut | None
    payload: dict[str, Any] | None
    error: str | None
