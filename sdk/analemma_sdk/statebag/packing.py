"""Packing: encode the new blobs of a dehydration into the objects it will upload, and give
every blob its pointer.

Batched, blobs this process already knows are stored cost nothing and the rest go into one
pack per temperature group; on the legacy path each blob is its own object, every time.
Nothing is uploaded or remembered here: that waits for the commit.
"""

from __future__ import annotations

import os

from .._record import Record, factory
from .canonical import sha256_hex
from .codec import RAW, Compressor
from .keys import object_key, pack_key
from .known import KnownDigests
from .manifests import PackWrite
from .packs import FrameRef, build_pack
from .planning import PendingBlob
from .pointers import BlobRef
from .temperature import Temperature


class Batch(Record):
    """What one dehydration uploads, and the stored blobs it reuses."""

    # Each object to upload: how it is recorded, its bytes, and the blobs it holds.
    items: list[tuple[PackWrite, bytes, list[PendingBlob]]] = factory(default_factory=list)
    reused: dict[tuple[str, str], BlobRef] = factory(default_factory=dict)  # by (key, digest)

    def add(self, built: tuple[PackWrite, bytes], blobs: list[PendingBlob]) -> None:
        self.items.append((built[0], built[1], blobs))

    def extend(self, other: Batch) -> None:
        self.items.extend(other.items)
        self.reused.update(other.reused)

    @property
    def writes(self) -> list[PackWrite]:
        return [write for write, _, _ in self.items]

    @property
    def new_blobs(self) -> int:
        return sum(len(blobs) for _, _, blobs in self.items)


class Packer:
    def __init__(self, compressor: Compressor, known: KnownDigests, *, use_batching: bool) -> None:
        """``compressor``'s dictionary, if any, is used for its owner's values only; other
        owners' values are compressed without one."""
        self.compressor = compressor
        self.known = known
        self.use_batching = use_batching
        self._plain: Compressor | None = None

    def compressor_for(self, owner_id: str) -> Compressor:
        dictionary = self.compressor.dictionary
        if dictionary is None or dictionary.owner_id == owner_id:
            return self.compressor
        if self._plain is None:
            self._plain = Compressor(self.compressor.codec, self.compressor.zstd_level)
        return self._plain

    def build(self, blobs: list[PendingBlob], owner_id: str) -> Batch:
        batch = Batch()
        compressor = self.compressor_for(owner_id)
        if not self.use_batching:
            for blob in blobs:
                batch.add(self._build_object(owner_id, blob, compressor), [blob])
            return batch
        groups: dict[Temperature, dict[str, PendingBlob]] = {}
        for blob in blobs:
            known = self.known.get(owner_id, blob.digest)
            if known is not None:
                blob.ref = known
                batch.reused[(known.key, known.digest)] = known
            else:
                groups.setdefault(blob.temperature, {}).setdefault(blob.digest, blob)
        for temperature in Temperature:
            group = groups.get(temperature)
            if group:
                batch.add(self._build_pack(owner_id, list(group.values()), compressor), list(group.values()))
        # A value that appears twice is packed once; its other blobs share the pointer.
        by_digest = {b.digest: b.ref for group in groups.values() for b in group.values()}
        for blob in blobs:
            if blob.ref is None:
                blob.ref = by_digest[blob.digest]
        return batch

    def _build_pack(
        self, owner_id: str, group: list[PendingBlob], compressor: Compressor
    ) -> tuple[PackWrite, bytes]:
        built = build_pack([(b.digest, len(b.raw), compressor.encode(b.raw)) for b in group])
        key = pack_key(owner_id, built.digest)
        refs = {frame.digest: _ref_from_frame(key, frame) for frame in built.frames}
        for blob in group:
            blob.ref = refs[blob.digest]
        return PackWrite(key, built.digest, len(built.data), built.frames), built.data

    def _build_object(
        self, owner_id: str, blob: PendingBlob, compressor: Compressor
    ) -> tuple[PackWrite, bytes]:
        encoded = compressor.encode(blob.raw)
        # One object per write, as on the original system: the nonce keeps any two writes apart.
        key = object_key(owner_id, blob.digest, os.urandom(8).hex())
        frame = FrameRef(blob.digest, 0, len(encoded.data), encoded.codec, len(blob.raw), encoded.dict_id)
        blob.ref = BlobRef(
            blob.digest, key, 0, len(encoded.data), encoded.codec, len(blob.raw), encoded.dict_id, whole=True
        )
        # A raw frame is the blob's own bytes, whose digest the blob already carries.
        digest = (
            blob.digest if encoded.codec == RAW and encoded.data is blob.raw else sha256_hex(encoded.data)
        )
        write = PackWrite(key, digest, len(encoded.data), (frame,), kind="object")
        return write, encoded.data


def _ref_from_frame(key: str, frame: FrameRef) -> BlobRef:
    return BlobRef(frame.digest, key, frame.offset, frame.length, frame.codec, frame.raw_size, frame.dict_id)
