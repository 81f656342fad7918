"""StateHydrator: dehydrate a state into a small payload, hydrate a payload into a lazy bag.

Modes:
* legacy (no flags, the baseline): each large field is written to its own object on every
  dehydration, no batching, no dedup, no compression; hydrate() loads every pointer at once.
* batched (``use_batching``): changed large values go into at most one pack per temperature
  group; values whose digest is already stored cost no write; lists are chunked so an append
  stores about one item; hydrate() is lazy. ``use_zstd`` picks zstd over gzip for frames.

A dehydration is complete or fails: nothing is held back for a later call.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Mapping
from typing import Any

from .._record import Record, factory
from . import metrics
from .bag import StateBag
from .cache import BlobCache
from .canonical import canonical_json, parse_json, sha256_hex
from .chunking import join_items, seal_ranges
from .codec import DEFAULT_ZSTD_LEVEL, GZIP, RAW, ZSTD, Compressor, ZstdDictionary, decode
from .config import META_KEY
from .errors import (
    BlobNotFoundError,
    BlobTooLargeError,
    CorruptBlobError,
    MalformedPointerError,
    ManifestServiceUnavailableError,
    PayloadTooLargeError,
    StaleReferenceError,
    UnknownDictionaryError,
)
from .keys import dictionary_key, object_key, pack_key, validate_id
from .manifests import (
    ManifestDraft,
    ManifestRecord,
    ManifestStore,
    PackWrite,
    PrepareRequest,
    supports_two_phase,
)
from .packs import FrameRef, build_pack
from .pointers import (
    BlobRef,
    ChunkRef,
    ListRef,
    Literal,
    Stored,
    literal_json,
    needs_escape,
    parse_pointer,
)
from .stores import BlobStore
from .temperature import Temperature, TemperatureRegistry

logger = logging.getLogger("analemma_sdk.statebag")

META_VERSION = 1
HARD_PAYLOAD_CEILING = 256 * 1024
DEFAULT_PAYLOAD_BUDGET = 16 * 1024
DEFAULT_INLINE_THRESHOLD = 1024
DEFAULT_CHUNK_TARGET = 8 * 1024
DEFAULT_MAX_BLOB_BYTES = 64 * 1024 * 1024
_KNOWN_LIMIT = 200_000
# A span read fetches the frames between wanted ones too; accept that up to this ratio.
_SPAN_SLACK = 2.0


# Plans: what dehydrate() decided for each field, before anything is written --------------
class _Inline(Record):
    stored: Any
    size: int


class _Existing(Record):
    """An untouched field whose stored pointer is carried over as it is."""

    stored: Any
    size: int


class _Blob(Record):
    digest: str
    raw: bytes
    temperature: Temperature
    ref: BlobRef | None = None


class _List(Record):
    chunks: list[tuple[_Blob, int]]
    tail: list[Any]
    tail_bytes: list[bytes]
    length: int
    item_bytes: list[bytes]

    @property
    def tail_size(self) -> int:
        return sum(len(b) + 1 for b in self.tail_bytes) + 1


_Plan = _Inline | _Existing | _Blob | _List


class DehydrationResult(Record, frozen=True):
    payload: dict[str, Any]
    writes: tuple[PackWrite, ...]
    entries: dict[str, Any]
    payload_bytes: int
    manifest: str | None = None
    version: int | None = None
    new_blobs: int = 0
    reused_blobs: int = 0


class _Batch(Record):
    """What one dehydration uploads, and the stored blobs it reuses."""

    items: list[tuple[PackWrite, bytes, list[_Blob]]] = factory(list)
    reused: dict[tuple[str, str], BlobRef] = factory(dict)

    def add(self, built: tuple[PackWrite, bytes], blobs: list[_Blob]) -> None:
        self.items.append((built[0], built[1], blobs))

    def extend(self, other: _Batch) -> None:
        self.items.extend(other.items)
        self.reused.update(other.reused)

    @property
    def writes(self) -> list[PackWrite]:
        return [write for write, _, _ in self.items]

    @property
    def new_blobs(self) -> int:
        return sum(len(blobs) for _, _, blobs in self.items)


class StateHydrator:
    def __init__(
        self,
        *,
        use_batching: bool = False,
        use_zstd: bool = False,
        compression_level: int = DEFAULT_ZSTD_LEVEL,
        store: BlobStore | None = None,
        dictionary: ZstdDictionary | None = None,
        dictionaries: Mapping[str, ZstdDictionary] | None = None,
        inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
        payload_budget: int = DEFAULT_PAYLOAD_BUDGET,
        chunk_target: int = DEFAULT_CHUNK_TARGET,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        cache_bytes: int = 64 * 1024 * 1024,
        temperatures: TemperatureRegistry | Mapping[str, Any] | None = None,
        manifest_store: ManifestStore | None = None,
        use_2pc: bool = False,
        cohort: Mapping[str, Any] | None = None,
    ) -> None:
        if not 1024 <= payload_budget <= HARD_PAYLOAD_CEILING:
            raise ValueError(f"payload_budget must be 1024-{HARD_PAYLOAD_CEILING} bytes")
        if not 0 <= inline_threshold < payload_budget:
            raise ValueError("inline_threshold must be below payload_budget")
        if chunk_target < 256:
            raise ValueError("chunk_target must be at least 256 bytes")
        if store is None:
            from .factory import default_store  # noqa: PLC0415 - avoid an import cycle

            store = default_store()
        self.use_batching = bool(use_batching)
        self.use_zstd = bool(use_zstd)
        self.store = store
        codec = ZSTD if use_zstd else (GZIP if use_batching else RAW)
        self.compressor = Compressor(codec, compression_level, dictionary if use_zstd else None)
        self.compression_level = compression_level
        self.inline_threshold = inline_threshold
        self.payload_budget = payload_budget
        self.chunk_target = chunk_target
        self.max_blob_bytes = max_blob_bytes
        # The legacy path is the original system's: it keeps nothing between calls.
        self.cache = BlobCache(cache_bytes if self.use_batching else 0)
        self.temperatures = (
            temperatures
            if isinstance(temperatures, TemperatureRegistry)
            else TemperatureRegistry(temperatures)
        )
        self.manifest_store = manifest_store
        self.use_2pc = bool(use_2pc)
        self._warned_no_2pc = False
        self.cohort = dict(
            cohort
            or {
                "use_batching": self.use_batching,
                "use_zstd": self.use_zstd,
                "zstd_level": compression_level,
                "use_2pc": self.use_2pc,
            }
        )
        self._dictionaries: dict[str, ZstdDictionary] = dict(dictionaries or {})
        if dictionary is not None:
            self._dictionaries[dictionary.dict_id] = dictionary
        self._dictionary = dictionary if self.compressor.codec == ZSTD else None
        self._dictionary_saved = False
        self._known: OrderedDict[tuple[str, str], BlobRef] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        if not self.use_batching:
            return "legacy"
        if self.compressor.codec != ZSTD:
            return "batched"
        return "batched_zstd_dict" if self._dictionary else "batched_zstd"

    def __repr__(self) -> str:
        return f"<StateHydrator mode={self.mode} level={self.compression_level} store={self.store!r}>"

    # Hydrate ---------------------------------------------------------------------------
    def hydrate(self, event: Mapping[str, Any]) -> StateBag:
        """Accepts the original system's three event shapes: ``state_data.bag``, flat ``state_data``
        and the root level."""
        bag = _extract_bag(event)
        meta = bag.get(META_KEY)
        if meta is not None and not isinstance(meta, dict):
            raise MalformedPointerError(f"{META_KEY} must be an object")
        stored = {name: value for name, value in bag.items() if name != META_KEY}
        if meta and "spill" in meta:
            stored.update(self._load_spill(meta["spill"]))
        state = StateBag(self, stored, meta)
        owner = (meta or {}).get("owner")
        if isinstance(owner, str):
            self._remember_refs(owner, state._pointers.values())
        if not self.use_batching:
            state.to_dict()  # the legacy path loads everything up front
        return state

    def _load_spill(self, pointer_json: Any) -> dict[str, Any]:
        pointer = parse_pointer(pointer_json)
        if not isinstance(pointer, BlobRef):
            raise MalformedPointerError("the spilled field map must be a blob pointer")
        fields = self.load(pointer)
        if not isinstance(fields, dict):
            raise CorruptBlobError("the spilled field map is not an object")
        return fields

    def load(self, pointer: Stored) -> Any:
        if isinstance(pointer, Literal):
            return pointer.value
        if isinstance(pointer, BlobRef):
            return parse_json(self.read_blobs([pointer])[0])
        items: list[Any] = []
        for chunk, raw in zip(pointer.chunks, self.read_blobs(pointer.blob_refs()), strict=True):
            part = parse_json(raw)
            if not isinstance(part, list) or len(part) != chunk.items:
                raise CorruptBlobError("list chunk does not hold the items its pointer promises")
            items.extend(part)
        items.extend(pointer.tail)
        return items

    def read_blobs(self, refs: list[BlobRef]) -> list[bytes]:
        """Verified raw bytes of each ref, from the cache or the store; frames of one pack
        that sit close together are fetched with a single ranged GET."""
        for ref in refs:
            if ref.raw_size > self.max_blob_bytes:
                raise BlobTooLargeError(
                    f"blob {ref.digest[:12]} declares {ref.raw_size} bytes, over the "
                    f"{self.max_blob_bytes}-byte ceiling"
                )
        found: dict[str, bytes] = {}
        missing: dict[str, list[BlobRef]] = defaultdict(list)
        for ref in refs:
            cached = self.cache.get(ref.digest)
            if cached is not None:
                found[ref.digest] = cached
            elif ref.digest not in found:
                missing[ref.key].append(ref)
        for key, group in missing.items():
            for ref, frame in self._fetch_frames(key, group):
                raw = decode(ref.codec, frame, ref.raw_size, self._dictionary_for(ref.dict_id))
                if sha256_hex(raw) != ref.digest:
                    raise CorruptBlobError(f"blob {ref.digest[:12]} fails its digest check")
                self.cache.put(ref.digest, raw)
                found[ref.digest] = raw
        return [found[ref.digest] for ref in refs]

    def _fetch_frames(self, key: str, refs: list[BlobRef]) -> list[tuple[BlobRef, bytes]]:
        unique = list({(r.offset, r.length): r for r in refs}.values())
        if len(unique) == 1 and unique[0].whole:
            frame = self.store.get(key)
            return [(unique[0], _checked_frame(unique[0], frame))]
        start = min(r.offset for r in unique)
        end = max(r.offset + r.length for r in unique)
        wanted = sum(r.length for r in unique)
        if len(unique) > 1 and end - start <= wanted * _SPAN_SLACK:
            span = self.store.get_range(key, start, end - start)
            return [
                (r, _checked_frame(r, span[r.offset - start : r.offset - start + r.length])) for r in unique
            ]
        return [(r, _checked_frame(r, self.store.get_range(key, r.offset, r.length))) for r in unique]

    def _dictionary_for(self, dict_id: str | None) -> ZstdDictionary | None:
        if dict_id is None:
            return None
        dictionary = self._dictionaries.get(dict_id)
        if dictionary is None:
            try:
                data = self.store.get(dictionary_key(dict_id))
            except BlobNotFoundError:
                raise UnknownDictionaryError(f"dictionary {dict_id} is not in the store") from None
            dictionary = ZstdDictionary(data)
            if dictionary.dict_id != dict_id:
                raise CorruptBlobError(f"dictionary {dict_id} in the store fails its digest check")
            self._dictionaries[dict_id] = dictionary
        return dictionary

    # Dehydrate -------------------------------------------------------------------------
    def dehydrate(
        self,
        state: Mapping[str, Any],
        *,
        owner_id: str,
        workflow_id: str,
        execution_id: str,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        return self.dehydrate_result(
            state,
            owner_id=owner_id,
            workflow_id=workflow_id,
            execution_id=execution_id,
            idempotency_key=idempotency_key,
        ).payload

    def dehydrate_result(
        self,
        state: Mapping[str, Any],
        *,
        owner_id: str,
        workflow_id: str,
        execution_id: str,
        idempotency_key: str | None = None,
    ) -> DehydrationResult:
        validate_id("owner id", owner_id)
        validate_id("workflow id", workflow_id)
        validate_id("execution id", execution_id)
        previous = state.meta if isinstance(state, StateBag) else state.get(META_KEY)
        previous = previous if isinstance(previous, dict) else {}
        plans = self._plans(state)
        fits = self._fit_budget(plans, owner_id)
        parent = previous.get("manifest") if previous.get("execution") == execution_id else None
        parents = (parent,) if isinstance(parent, str) else ()
        ids = (owner_id, workflow_id, execution_id)
        for attempt in range(2):
            batch = self._build(plans, owner_id)
            entries = {name: _render(plan) for name, plan in plans.items()}
            meta: dict[str, Any] = {
                "v": META_VERSION,
                "owner": owner_id,
                "workflow": workflow_id,
                "execution": execution_id,
                "cfg": self.config_tag(),
            }
            visible: dict[str, Any] = entries
            if not fits:
                # Too many fields for even their pointers to fit: the field map itself becomes
                # one blob, and the payload carries only its pointer.
                spill = _Blob(*_digested(canonical_json(entries)), Temperature.COLD)
                self._check_blob_size("(field map)", spill.raw)
                batch.extend(self._build({"": spill}, owner_id))
                assert spill.ref is not None
                meta["spill"] = spill.ref.to_json()
                visible = {}
            try:
                record = self._commit(ids, parents, batch, entries, idempotency_key)
                break
            except ManifestServiceUnavailableError as exc:
                return self._degrade(state, ids, parents, exc)
            except StaleReferenceError as exc:
                self._forget_stale(owner_id, exc, batch, plans)
                if attempt:
                    raise
        if record is not None:
            meta.update(manifest=record.hash, version=record.version)
            if record.entries is not None:
                # A replayed commit: hand on what was committed the first time.
                meta.pop("spill", None)
                entries = visible = dict(record.entries)
        payload = {**visible, META_KEY: meta}
        size = len(canonical_json(payload))
        if size > self.payload_budget:
            raise PayloadTooLargeError(
                f"payload is {size} bytes after offloading, over the {self.payload_budget}-byte budget"
            )
        return DehydrationResult(
            payload=payload,
            writes=tuple(batch.writes),
            entries=entries,
            payload_bytes=size,
            manifest=record.hash if record else None,
            version=record.version if record else None,
            new_blobs=batch.new_blobs,
            reused_blobs=len(batch.reused),
        )

    def _commit(
        self,
        ids: tuple[str, str, str],
        parents: tuple[str, ...],
        batch: _Batch,
        entries: dict[str, Any],
        idempotency_key: str | None,
    ) -> ManifestRecord | None:
        """Upload and record: prepare -> upload -> commit when two-phase, else upload -> record."""
        owner_id, workflow_id, execution_id = ids
        store = self.manifest_store
        if store is None:
            self._upload(batch, owner_id)
            return None
        if self.use_2pc and supports_two_phase(store):
            prepared = store.prepare(  # type: ignore[attr-defined]  # checked by supports_two_phase
                PrepareRequest(
                    owner_id=owner_id,
                    workflow_id=workflow_id,
                    execution_id=execution_id,
                    parents=parents,
                    packs=tuple(batch.writes),
                    reused=tuple(batch.reused),
                    idempotency_key=idempotency_key,
                )
            )
            if prepared.committed is not None:
                return prepared.committed  # a retry of a dehydration that already committed
            try:
                self._upload(batch, owner_id, prepared.uploads)
                return store.commit(prepared.txn_id, entries, self.cohort)  # type: ignore[attr-defined,no-any-return]
            except ManifestServiceUnavailableError:
                self._abort_quietly(prepared.txn_id)
                raise
        if self.use_2pc:
            self._warn_no_2pc()
        self._upload(batch, owner_id)
        return store.record(
            ManifestDraft(
                owner_id=owner_id,
                workflow_id=workflow_id,
                execution_id=execution_id,
                parents=parents,
                entries=entries,
                packs=tuple(batch.writes),
                cohort=self.cohort,
                idempotency_key=idempotency_key,
            )
        )

    def _forget_stale(
        self, owner_id: str, error: StaleReferenceError, batch: _Batch, plans: dict[str, _Plan]
    ) -> None:
        """Collected since this process saw it: forget it, so the value is stored again."""
        self._forget(owner_id, error.digests or [d for _, d in batch.reused])
        for plan in plans.values():
            for blob in _blobs_of(plan):
                blob.ref = None

    def _abort_quietly(self, txn_id: str) -> None:
        """Best effort: the reaper aborts an expired transaction anyway."""
        try:
            self.manifest_store.abort(txn_id)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - already failing; the reaper is the backstop
            logger.debug("abort of %s failed: %s", txn_id, exc)

    def _degrade(
        self,
        state: Mapping[str, Any],
        ids: tuple[str, str, str],
        parents: tuple[str, ...],
        error: Exception,
    ) -> DehydrationResult:
        """The manifest service is unreachable: store this version the legacy way (one object
        per large field, nothing recorded) rather than fail the caller's step. The payload keeps
        the last committed version as its parent, so the chain continues from there."""
        metrics.increment("statebag_degraded_to_legacy_total")
        logger.warning("manifest service unavailable (%s): dehydrating %s on the legacy path", error, ids[2])
        legacy = StateHydrator(
            store=self.store,
            inline_threshold=self.inline_threshold,
            payload_budget=self.payload_budget,
            max_blob_bytes=self.max_blob_bytes,
            temperatures=self.temperatures,
        )
        owner_id, workflow_id, execution_id = ids
        result = legacy.dehydrate_result(
            state, owner_id=owner_id, workflow_id=workflow_id, execution_id=execution_id
        )
        meta = result.payload[META_KEY]
        meta["cfg"] = self.config_tag()  # the execution keeps its configuration
        meta["degraded"] = True
        if parents:
            meta["manifest"] = parents[0]
        return result

    def config_tag(self) -> list[int]:
        """The configuration, as recorded in each payload: [batching, zstd, level, 2pc]."""
        return [int(self.use_batching), int(self.use_zstd), self.compression_level, int(self.use_2pc)]

    def _warn_no_2pc(self) -> None:
        metrics.increment("statebag_2pc_unavailable_total")
        if not self._warned_no_2pc:
            self._warned_no_2pc = True
            logger.error(
                "use_2pc is on but %r cannot run a two-phase commit: committing in one step",
                self.manifest_store,
            )

    def _plans(self, state: Mapping[str, Any]) -> dict[str, _Plan]:
        plans: dict[str, _Plan] = {}
        for name in state:
            if name == META_KEY:
                continue
            if not isinstance(name, str):
                raise TypeError("state field names must be strings")
            if isinstance(state, StateBag) and state.untouched(name) and self.use_batching:
                stored = state.stored_form(name)
                size = len(canonical_json(stored))
                is_ref = isinstance(state._pointers.get(name), BlobRef | ListRef)
                plans[name] = _Existing(stored, size) if is_ref else _Inline(stored, size)
            else:
                plans[name] = self._plan(name, state[name])
        return plans

    def _plan(self, name: str, value: Any) -> _Plan:
        if self.use_batching and isinstance(value, list):
            whole = canonical_json(value)
            self._check_blob_size(name, whole)
            if len(whole) // self.chunk_target * 256 > self.payload_budget // 2:
                # Too many chunks for their pointers to fit the payload: one blob, and no
                # per-item encoding spent on a chunking that would be thrown away.
                return _Blob(sha256_hex(whole), whole, self.temperatures.of(name))
            item_bytes = [canonical_json(item) for item in value]
            total = sum(len(b) + 1 for b in item_bytes) + 1
            if total <= self.inline_threshold:
                return _Inline(value, total)
            ranges, tail_start = seal_ranges([len(b) for b in item_bytes], self.chunk_target)
            temperature = self.temperatures.of(name)
            chunks = []
            for start, end in ranges:
                raw = join_items(item_bytes[start:end])
                chunks.append((_Blob(sha256_hex(raw), raw, temperature), end - start))
            return _List(chunks, value[tail_start:], item_bytes[tail_start:], len(value), item_bytes)
        raw = canonical_json(value)
        self._check_blob_size(name, raw)
        if len(raw) <= self.inline_threshold:
            if needs_escape(value):
                stored = literal_json(value)
                return _Inline(stored, len(canonical_json(stored)))
            return _Inline(value, len(raw))
        return _Blob(sha256_hex(raw), raw, self.temperatures.of(name))

    def _check_blob_size(self, name: str, raw: bytes) -> None:
        if len(raw) > self.max_blob_bytes:
            raise BlobTooLargeError(
                f"field {name!r} is {len(raw)} bytes, over the {self.max_blob_bytes}-byte ceiling"
            )

    def _fit_budget(self, plans: dict[str, _Plan], owner_id: str) -> bool:
        """Offload the largest inline parts until the payload fits its budget; False when
        even every pointer together would not fit."""
        pointer_size = _pointer_size_bound(owner_id)
        meta_size = 320 + 3 * 128  # meta object with ids at their longest, manifest hash
        total = meta_size + sum(len(n) + 4 + _plan_size(p, pointer_size) for n, p in plans.items())
        if total <= self.payload_budget:
            return True
        # Largest savings first. A list takes two passes to become one blob (seal its tail,
        # then give up chunking), so a smaller field is offloaded before that happens.
        for _ in range(2):
            order = sorted(((_reducible(p, pointer_size), n) for n, p in plans.items()), reverse=True)
            for saving, name in order:
                if total <= self.payload_budget:
                    return True
                if saving <= 0:
                    break
                before = _plan_size(plans[name], pointer_size)
                plans[name] = self._offload(name, plans[name])
                total += _plan_size(plans[name], pointer_size) - before
        return total <= self.payload_budget

    def _offload(self, name: str, plan: _Plan) -> _Plan:
        temperature = self.temperatures.of(name)
        if isinstance(plan, _List) and plan.tail:
            # Seal the tail early as an extra chunk; its items are stored once more later
            # when the regular chunk around them seals, which stays bounded by chunk_target.
            raw = join_items(plan.tail_bytes)
            chunk = (_Blob(sha256_hex(raw), raw, temperature), len(plan.tail))
            return _List([*plan.chunks, chunk], [], [], plan.length, plan.item_bytes)
        if isinstance(plan, _List):
            # So many chunks that their pointers alone overflow the budget: store the list
            # as one blob. Correct and bounded; appends to it are no longer incremental.
            raw = join_items(plan.item_bytes)
            return _Blob(sha256_hex(raw), raw, temperature)
        assert isinstance(plan, _Inline)
        raw = canonical_json(_unescape(plan.stored))
        return _Blob(sha256_hex(raw), raw, temperature)

    def _build(self, plans: dict[str, _Plan], owner_id: str) -> _Batch:
        """Encode new blobs into packs (or legacy objects) and give every blob its ref.
        Nothing is uploaded or remembered yet."""
        blobs = [b for plan in plans.values() for b in _blobs_of(plan)]
        batch = _Batch()
        if not self.use_batching:
            for blob in blobs:
                batch.add(self._build_object(owner_id, blob), [blob])
            return batch
        groups: dict[Temperature, dict[str, _Blob]] = defaultdict(dict)
        for blob in blobs:
            known = self._known_ref(owner_id, blob.digest)
            if known is not None:
                blob.ref = known
                batch.reused[(known.key, known.digest)] = known
            else:
                groups[blob.temperature].setdefault(blob.digest, blob)
        for temperature in Temperature:
            group = groups.get(temperature)
            if group:
                batch.add(self._build_pack(owner_id, list(group.values())), list(group.values()))
        by_digest = {b.digest: b.ref for group in groups.values() for b in group.values()}
        for blob in blobs:
            if blob.ref is None:
                blob.ref = by_digest[blob.digest]
        return batch

    def _build_pack(self, owner_id: str, group: list[_Blob]) -> tuple[PackWrite, bytes]:
        built = build_pack([(b.digest, len(b.raw), self.compressor.encode(b.raw)) for b in group])
        key = pack_key(owner_id, built.digest)
        refs = {frame.digest: _ref_from_frame(key, frame) for frame in built.frames}
        for blob in group:
            blob.ref = refs[blob.digest]
        return PackWrite(key, built.digest, len(built.data), built.frames), built.data

    def _build_object(self, owner_id: str, blob: _Blob) -> tuple[PackWrite, bytes]:
        encoded = self.compressor.encode(blob.raw)
        key = object_key(owner_id, blob.digest, os.urandom(8).hex())
        frame = FrameRef(blob.digest, 0, len(encoded.data), encoded.codec, len(blob.raw), encoded.dict_id)
        blob.ref = BlobRef(
            blob.digest, key, 0, len(encoded.data), encoded.codec, len(blob.raw), encoded.dict_id, whole=True
        )
        write = PackWrite(key, sha256_hex(encoded.data), len(encoded.data), (frame,), kind="object")
        return write, encoded.data

    def _upload(self, batch: _Batch, owner_id: str, targets: Mapping[str, Any] | None = None) -> None:
        if self._dictionary is not None and batch.writes and self.use_batching:
            self._save_dictionary()
        for write, data, blobs in batch.items:
            if targets and write.key in targets:
                self.manifest_store.upload(targets[write.key], data)  # type: ignore[union-attr]
            else:
                self.store.put(write.key, data)
            for blob in blobs:
                assert blob.ref is not None
                self.cache.put(blob.digest, blob.raw)
                if write.kind == "pack":
                    self._remember(owner_id, blob.ref)

    def _forget(self, owner_id: str, digests: Any) -> None:
        with self._lock:
            for digest in digests:
                self._known.pop((owner_id, digest), None)

    def _save_dictionary(self) -> None:
        if self._dictionary_saved or self._dictionary is None:
            return
        key = dictionary_key(self._dictionary.dict_id)
        if not self.store.exists(key):
            self.store.put(key, self._dictionary.data)
        self._dictionary_saved = True

    # Known digests: what this process has seen stored, for dedup without asking the store.
    def _remember(self, owner_id: str, ref: BlobRef) -> None:
        with self._lock:
            self._known[(owner_id, ref.digest)] = ref
            self._known.move_to_end((owner_id, ref.digest))
            while len(self._known) > _KNOWN_LIMIT:
                self._known.popitem(last=False)

    def _known_ref(self, owner_id: str, digest: str) -> BlobRef | None:
        with self._lock:
            return self._known.get((owner_id, digest))

    def _remember_refs(self, owner_id: str, pointers: Any) -> None:
        prefix = f"o/{owner_id}/p/"
        for pointer in pointers:
            refs = (
                [pointer]
                if isinstance(pointer, BlobRef)
                else (pointer.blob_refs() if isinstance(pointer, ListRef) else [])
            )
            for ref in refs:
                # Only packs under the owner's own prefix count: a payload cannot make this
                # owner's writes point at somebody else's objects.
                if ref.key.startswith(prefix) and not ref.whole:
                    self._remember(owner_id, ref)


# Helpers -------------------------------------------------------------------------------
def _extract_bag(event: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(event, Mapping):
        raise MalformedPointerError("event must be a JSON object")
    state_data = event.get("state_data")
    if isinstance(state_data, Mapping):
        bag = state_data.get("bag")
        if isinstance(bag, Mapping):
            return dict(bag)
        return dict(state_data)
    return dict(event)


def _digested(raw: bytes) -> tuple[str, bytes]:
    return sha256_hex(raw), raw


def _checked_frame(ref: BlobRef, frame: bytes) -> bytes:
    if len(frame) != ref.length:
        raise CorruptBlobError(f"blob {ref.digest[:12]}: read {len(frame)} bytes, expected {ref.length}")
    return frame


def _ref_from_frame(key: str, frame: FrameRef) -> BlobRef:
    return BlobRef(frame.digest, key, frame.offset, frame.length, frame.codec, frame.raw_size, frame.dict_id)


def _blobs_of(plan: _Plan) -> list[_Blob]:
    if isinstance(plan, _Blob):
        return [plan]
    if isinstance(plan, _List):
        return [blob for blob, _ in plan.chunks]
    return []


def _render(plan: _Plan) -> Any:
    if isinstance(plan, _Inline | _Existing):
        return plan.stored
    if isinstance(plan, _Blob):
        assert plan.ref is not None
        return plan.ref.to_json()
    chunks = []
    for blob, items in plan.chunks:
        assert blob.ref is not None
        chunks.append(ChunkRef(blob.ref, items))
    return ListRef(plan.length, tuple(chunks), tuple(plan.tail)).to_json()


def _unescape(stored: Any) -> Any:
    if isinstance(stored, dict) and stored.get("$sb") == "lit":
        return stored["value"]
    return stored


def _pointer_size_bound(owner_id: str) -> int:
    big = 10**12
    ref = BlobRef(
        "f" * 64, pack_key(owner_id, "f" * 64) + ".0000000000000000", big, big, GZIP, big, "f" * 32, True
    )
    return len(canonical_json(ref.to_json())) + 8


def _plan_size(plan: _Plan, pointer_size: int) -> int:
    if isinstance(plan, _Inline | _Existing):
        return plan.size
    if isinstance(plan, _Blob):
        return pointer_size
    return 64 + len(plan.chunks) * (pointer_size + 8) + plan.tail_size


def _reducible(plan: _Plan, pointer_size: int) -> int:
    """How many payload bytes offloading this plan would save."""
    if isinstance(plan, _Inline):
        return plan.size - pointer_size
    if isinstance(plan, _List):
        if plan.tail:
            return plan.tail_size - pointer_size
        return _plan_size(plan, pointer_size) - pointer_size
    return 0
