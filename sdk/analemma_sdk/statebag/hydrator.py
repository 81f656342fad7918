"""StateHydrator: dehydrate a state into a small payload, hydrate a payload into a lazy bag.

Modes:
* legacy (no flags, the baseline): exactly the original system's legacy path — a data-plane
  field over 10 KB is one uncompressed object, written again at every dehydration that read
  it; everything else stays inline; one whole-object GET per offloaded field on first access;
  nothing kept between invocations. A team switching sees the same requests on day one.
* batched (``use_batching``): data-plane values stay in the payload as compressed inline
  frames while the payload fits its budget; under budget pressure the largest go into at most
  one pack per temperature group, values whose digest is already stored cost no write, lists
  are chunked so an append stores about one chunk. ``use_zstd`` picks zstd over gzip for
  pack frames. Values keep their key order on every path.
* degraded: what a batched dehydration falls back to when the manifest service cannot be
  reached — every large value to an object of its own, nothing reused, the payload within
  its budget.

Hydration is lazy in every mode: a field is fetched on first access.

A dehydration is complete or fails: nothing is held back for a later call.

The work itself is done elsewhere: planning.py decides what each field becomes, packing.py
encodes the new blobs, commit.py uploads and records them, reader.py reads them back and
known.py remembers what is stored. This class wires them together for one configuration.

Telemetry (``telemetry=``: a FlagClient, a ``telemetry.sender.Telemetry``, or False): the
hydrator counts what it costs, per configuration cohort, into the flag client's batches (see
``analemma_sdk.telemetry.hydration``); with none, nothing is counted and nothing loads.
"""

from __future__ import annotations

from .._containers import Mapping
from .._record import Record
from . import metrics
from .bag import StateBag
from .cache import BlobCache
from .canonical import value_json
from .codec import DEFAULT_ZSTD_LEVEL, GZIP, RAW, ZSTD, Compressor, ZstdDictionary
from .config import META_KEY, config_tag
from .errors import (
    MalformedPointerError,
    ManifestServiceUnavailableError,
    PayloadTooLargeError,
    StaleReferenceError,
)
from .keys import validate_id
from .known import KnownDigests
from .pointers import BlobRef, Stored
from .policy import (
    BATCHED,
    DATA_PLANE_FIELDS,
    DEFAULT_CHUNK_TARGET,
    DEFAULT_INLINE_THRESHOLD,
    DEFAULT_MAX_BLOB_BYTES,
    DEFAULT_PAYLOAD_BUDGET,
    HARD_PAYLOAD_CEILING,
    LEGACY,
    OBJECTS,
    PlanningConfig,
)
from .reader import BlobReader, owned_dictionaries
from .store_urls import default_store
from .temperature import TemperatureRegistry

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from ..telemetry.hydration import HydratorTelemetry
    from .commit import Committer
    from .manifest_protocols import ManifestStore
    from .manifests import PackWrite
    from .packing import Batch, Packer
    from .planning import FieldPlan
    from .reader import Dictionaries, LegacyDictionaries
    from .stores import BlobStore

__all__ = ["META_KEY", "DehydrationResult", "StateHydrator"]


# 2: values are stored in their own key order (canonical.value_json); 1: key-sorted.
META_VERSION = 2


class DehydrationResult(Record, frozen=True):
    payload: dict[str, Any]
    writes: tuple[PackWrite, ...]
    entries: dict[str, Any]
    payload_bytes: int
    manifest: str | None = None
    version: int | None = None
    new_blobs: int = 0
    reused_blobs: int = 0
    inline_bytes: int = 0  # JSON bytes of the values the payload carries (inline frames included)
    offloaded_bytes: int = 0  # JSON bytes of the values kept in the store (see _plan_bytes)


class StateHydrator:
    def __init__(
        self,
        *,
        use_batching: bool = False,
        use_zstd: bool = False,
        zstd_level: int | None = None,
        store: BlobStore | None = None,
        dictionary: ZstdDictionary | None = None,
        dictionaries: Dictionaries | None = None,
        legacy_dictionaries: LegacyDictionaries = True,
        inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
        payload_budget: int = DEFAULT_PAYLOAD_BUDGET,
        chunk_target: int = DEFAULT_CHUNK_TARGET,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        cache_bytes: int = 64 * 1024 * 1024,
        cache: BlobCache | None = None,
        temperatures: TemperatureRegistry | Mapping[str, Any] | None = None,
        manifest_store: ManifestStore | None = None,
        use_2pc: bool = False,
        cohort: Mapping[str, Any] | None = None,
        compression_level: int | None = None,
        data_plane_fields: Iterable[str] = DATA_PLANE_FIELDS,
        inline_frames: bool = True,
        telemetry: Any = None,
    ) -> None:
        """``store`` defaults to the process-wide store (STATEBAG_STORE_URL, else a temp folder).
        ``compression_level`` is the deprecated name of ``zstd_level``. ``cache``: a blob cache
        to use instead of one of ``cache_bytes`` of its own; it answers by digest, so share one
        only between hydrators that read for the same owner.

        ``dictionary`` (with ``use_zstd``) compresses the values of the owner it names, and
        only theirs; it is stored under that owner's prefix. ``dictionaries`` are further ones
        for reading, each bound to its owner. ``legacy_dictionaries`` says whether frames written
        by earlier versions may use the dictionaries they kept in the shared ``dicts/`` folder
        (see ``reader.LegacyDictionaries``). ``data_plane_fields``: the fields that may leave
        the payload (the original system's list by default); the others stay plain JSON for
        the orchestrator, unless a batched payload's budget leaves no other choice.
        ``inline_frames`` (batched): off stores every data-plane value over ``inline_threshold``
        in a pack, as versions before inline frames did, for payloads that must stay as small
        as they can whatever the requests cost. ``telemetry``: where this hydrator's counts go —
        a FlagClient (its telemetry, if on), a ``Telemetry``, or None/False for nowhere
        (``get_hydrator`` picks one; see the module docstring)."""
        zstd_level = _zstd_level_argument(zstd_level, compression_level)
        if dictionary is not None and not dictionary.owner_id:
            raise ValueError(
                "a compression dictionary must name the owner it was trained for: "
                "ZstdDictionary(data, owner_id=...) or dictionary.for_owner(owner_id)"
            )
        self.planning = PlanningConfig(
            policy=BATCHED if use_batching else LEGACY,
            data_plane=frozenset(data_plane_fields),
            inline_frames=bool(inline_frames),
            inline_threshold=inline_threshold,
            payload_budget=payload_budget,
            chunk_target=chunk_target,
            max_blob_bytes=max_blob_bytes,
            temperatures=(
                temperatures
                if isinstance(temperatures, TemperatureRegistry)
                else TemperatureRegistry(temperatures)
            ),
        )
        self.store = store if store is not None else default_store()
        self.telemetry: HydratorTelemetry | None = None
        io_store = self.store  # what reads and writes go through: counted with telemetry
        self.use_batching = bool(use_batching)
        self.use_zstd = bool(use_zstd)
        self.use_2pc = bool(use_2pc)
        codec = ZSTD if use_zstd else (GZIP if use_batching else RAW)
        self.compressor = Compressor(codec, zstd_level, dictionary if use_zstd else None)
        self.zstd_level = zstd_level
        # The legacy path is the original system's: it keeps nothing between calls.
        self.cache = cache if cache is not None else BlobCache(cache_bytes if self.use_batching else 0)
        self.manifest_store = manifest_store
        self.cohort = dict(cohort or self.config_tag())
        sink = _telemetry_sink(telemetry)
        if sink is not None:
            from ..telemetry.hydration import HydratorTelemetry

            self.telemetry = HydratorTelemetry(sink, self.cohort)
            io_store = self.telemetry.store(self.store)
        self._io_store = io_store
        loaded = list(owned_dictionaries(dictionaries).values())
        if dictionary is not None:
            loaded.append(dictionary)
        self._dictionary = self.compressor.dictionary if self.compressor.codec == ZSTD else None
        self.known = KnownDigests()
        self.reader = BlobReader(
            io_store,
            self.cache,
            max_blob_bytes=max_blob_bytes,
            dictionaries=loaded,
            legacy_dictionaries=legacy_dictionaries,
        )
        # What only a dehydration needs is built, and its modules loaded, at the first one:
        # a step that only reads (a fan-out branch, a reduce) never pays for them.
        self._packer: Packer | None = None
        self._committer: Committer | None = None
        if self._dictionary is not None:
            self.committer  # noqa: B018 - refuses a store the dictionary cannot be published in, now

    @property
    def packer(self) -> Packer:
        if self._packer is None:
            from .packing import Packer

            self._packer = Packer(self.compressor, self.known, use_batching=self.use_batching)
        return self._packer

    @property
    def committer(self) -> Committer:
        if self._committer is None:
            from .commit import Committer

            self._committer = Committer(
                self._io_store,
                self.cache,
                self.known,
                manifest_store=self.manifest_store,
                use_2pc=self.use_2pc,
                cohort=self.cohort,
                # Every path that compresses with the dictionary publishes it (under its owner).
                dictionary=self._dictionary,
                telemetry=self.telemetry,
            )
        return self._committer

    # The planning limits, as given --------------------------------------------------------
    @property
    def inline_threshold(self) -> int:
        return self.planning.inline_threshold

    @property
    def payload_budget(self) -> int:
        return self.planning.payload_budget

    @property
    def chunk_target(self) -> int:
        return self.planning.chunk_target

    @property
    def max_blob_bytes(self) -> int:
        return self.planning.max_blob_bytes

    @property
    def temperatures(self) -> TemperatureRegistry:
        return self.planning.temperatures

    @property
    def compression_level(self) -> int:
        """Deprecated name of ``zstd_level``."""
        import warnings  # only for code still on the deprecated name

        warnings.warn("StateHydrator.compression_level is deprecated: use zstd_level", DeprecationWarning, 2)
        return self.zstd_level

    @property
    def mode(self) -> str:
        if self.planning.policy == OBJECTS:
            return "degraded"
        if not self.use_batching:
            return "legacy"
        if self.compressor.codec != ZSTD:
            return "batched"
        return "batched_zstd_dict" if self._dictionary else "batched_zstd"

    def __repr__(self) -> str:
        return f"<StateHydrator mode={self.mode} zstd_level={self.zstd_level} store={self.store!r}>"

    def config_tag(self) -> dict[str, Any]:
        """The configuration, as recorded in each payload (``config.read_config_tag`` reads it)."""
        return config_tag(vars(self))

    # Hydrate ---------------------------------------------------------------------------
    def hydrate(self, event: Mapping[str, Any]) -> StateBag:
        """Accepts the original system's three event shapes: ``state_data.bag``, flat ``state_data``
        and the root level."""
        if self.telemetry is not None:
            bag: StateBag = self.telemetry.hydrate(self._hydrate, event)
            return bag
        return self._hydrate(event)

    def _hydrate(self, event: Mapping[str, Any]) -> StateBag:
        bag = _extract_bag(event)
        meta = bag.get(META_KEY)
        if meta is not None and not isinstance(meta, dict):
            raise MalformedPointerError(f"{META_KEY} must be an object")
        stored = {name: value for name, value in bag.items() if name != META_KEY}
        if meta and "spill" in meta:
            stored.update(self.reader.load_field_map(meta["spill"]))
        state = StateBag(self.reader, stored, meta)
        owner = (meta or {}).get("owner")
        if isinstance(owner, str) and self.use_batching:
            self.known.remember_pointers(owner, state.pointers().values())
        return state

    def load(self, pointer: Stored) -> Any:
        return self.reader.load(pointer)

    def read_blobs(self, refs: list[BlobRef]) -> list[bytes]:
        """Verified raw bytes of each ref, from the cache or the store; frames of one pack
        that sit close together are fetched with a single ranged GET."""
        return self.reader.read_blobs(refs)

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
        ids = {"owner_id": owner_id, "workflow_id": workflow_id, "execution_id": execution_id}
        if self.telemetry is not None:
            result: DehydrationResult = self.telemetry.dehydrate(
                self._dehydrate_result, state, idempotency_key=idempotency_key, **ids
            )
            return result
        return self._dehydrate_result(state, idempotency_key=idempotency_key, **ids)

    def _dehydrate_result(
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
        from .planning import blobs_of, fit_budget, plan_field_map, plan_state, render_entries

        previous = state.meta if isinstance(state, StateBag) else state.get(META_KEY)
        previous = previous if isinstance(previous, dict) else {}
        plans = plan_state(state, self.planning)
        # The legacy path offloads by name and size only, as the original did, whatever the size.
        fits = self.planning.policy == LEGACY or fit_budget(plans, owner_id, self.planning)
        parent = previous.get("manifest") if previous.get("execution") == execution_id else None
        parents = (parent,) if isinstance(parent, str) else ()
        ids = (owner_id, workflow_id, execution_id)
        for attempt in range(2):
            batch = self.packer.build(blobs_of(plans), owner_id)
            entries = render_entries(plans)
            meta: dict[str, Any] = {
                "v": META_VERSION,
                "owner": owner_id,
                "workflow": workflow_id,
                "execution": execution_id,
                "cfg": self.config_tag(),
            }
            visible: dict[str, Any] = entries
            if not fits:
                field_map = plan_field_map(entries, self.planning)
                batch.extend(self.packer.build([field_map], owner_id))
                assert field_map.ref is not None
                meta["spill"] = field_map.ref.to_json()
                visible = {}
            try:
                record = self.committer.commit(ids, parents, batch, entries, idempotency_key)
                break
            except ManifestServiceUnavailableError as exc:
                return self._degrade(state, ids, parents, exc)
            except StaleReferenceError as exc:
                # A blob this process remembered as stored was collected since: forget it and
                # plan again, so that this time the value is stored anew (a field read but
                # unchanged too, rather than keep a pointer to what may be gone).
                self._forget_stale(owner_id, exc, batch, plans)
                if attempt:
                    raise
                plans = plan_state(state, self.planning, keep_read=False)
                fits = self.planning.policy == LEGACY or fit_budget(plans, owner_id, self.planning)
        if record is not None:
            meta.update(manifest=record.hash, version=record.version)
            if record.entries is not None:
                # A replayed commit: hand on what was committed the first time.
                meta.pop("spill", None)
                entries = visible = dict(record.entries)
        payload = {**visible, META_KEY: meta}
        size = len(value_json(payload))
        limit = HARD_PAYLOAD_CEILING if self.planning.policy == LEGACY else self.payload_budget
        if size > limit:
            raise PayloadTooLargeError(
                f"payload is {size} bytes after offloading, over the {limit}-byte "
                f"{'ceiling' if self.planning.policy == LEGACY else 'budget'}"
            )
        inline, offloaded = _plan_bytes(plans)
        return DehydrationResult(
            payload=payload,
            writes=tuple(batch.writes),
            entries=entries,
            payload_bytes=size,
            manifest=record.hash if record else None,
            version=record.version if record else None,
            new_blobs=batch.new_blobs,
            reused_blobs=len(batch.reused),
            inline_bytes=inline,
            offloaded_bytes=offloaded,
        )

    def _forget_stale(
        self, owner_id: str, error: StaleReferenceError, batch: Batch, plans: dict[str, FieldPlan]
    ) -> None:
        from .planning import blobs_of

        self.known.forget(owner_id, error.digests or [digest for _, digest in batch.reused])
        for blob in blobs_of(plans):
            blob.ref = None

    def _degrade(
        self,
        state: Mapping[str, Any],
        ids: tuple[str, str, str],
        parents: tuple[str, ...],
        error: Exception,
    ) -> DehydrationResult:
        """The manifest service is unreachable: store this version on the degraded path (one
        object per large field, nothing reused, nothing recorded) rather than fail the caller's
        step. The payload keeps the last committed version as its parent, so the chain
        continues from there."""
        metrics.increment("statebag_degraded_to_legacy_total")
        if self.telemetry is not None:
            self.telemetry.degraded()
        metrics.logger().warning(
            "manifest service unavailable (%s): dehydrating %s on the degraded path", error, ids[2]
        )
        legacy = StateHydrator(
            store=self._io_store,  # its requests count for this hydrator's cohort
            inline_threshold=self.inline_threshold,
            payload_budget=self.payload_budget,
            max_blob_bytes=self.max_blob_bytes,
            temperatures=self.temperatures,
            data_plane_fields=self.planning.data_plane,
        )
        legacy.planning = PlanningConfig(
            policy=OBJECTS,
            inline_threshold=self.inline_threshold,
            payload_budget=self.payload_budget,
            chunk_target=self.chunk_target,
            max_blob_bytes=self.max_blob_bytes,
            temperatures=self.temperatures,
            data_plane=self.planning.data_plane,
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


def _plan_bytes(plans: Mapping[str, FieldPlan]) -> tuple[int, int]:
    """JSON bytes of the values the payload carries, and of the values it points to in the
    store (a pointer kept as it was, to a value not read this step, counts in neither)."""
    from .planning import ChunkedList, InlineFrame, InlineValue, PendingBlob

    inline = offloaded = 0
    for plan in plans.values():
        if isinstance(plan, InlineValue):
            inline += plan.size
        elif isinstance(plan, InlineFrame):
            inline += len(plan.raw)
        elif isinstance(plan, PendingBlob):
            offloaded += len(plan.raw)
        elif isinstance(plan, ChunkedList):
            offloaded += sum(len(blob.raw) for blob, _ in plan.chunks)
            inline += sum(len(raw) for raw in plan.tail_bytes)
    return inline, offloaded


def _telemetry_sink(telemetry: Any) -> Any:
    """The ``Telemetry`` a hydrator's counts go to: a flag client's (when its telemetry is on),
    a ``Telemetry`` itself, or None."""
    if telemetry is None or telemetry is False:
        return None
    sink = getattr(telemetry, "telemetry_sink", None)
    if callable(sink):
        return sink()  # a FlagClient
    if getattr(telemetry, "recorder", None) is not None:
        return telemetry
    raise TypeError(f"telemetry must be a FlagClient, a Telemetry, None or False, not {telemetry!r}")


def _zstd_level_argument(zstd_level: int | None, compression_level: int | None) -> int:
    if compression_level is None:
        return DEFAULT_ZSTD_LEVEL if zstd_level is None else zstd_level
    if zstd_level is not None:
        raise TypeError("pass zstd_level only: compression_level is its deprecated name")
    import warnings  # only for code still on the deprecated name

    warnings.warn(
        "StateHydrator(compression_level=...) is deprecated: use zstd_level=...",
        DeprecationWarning,
        stacklevel=3,
    )
    return compression_level


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
