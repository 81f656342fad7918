"""Planning a dehydration: for each field, whether it stays inline in the payload (plain, or
compressed in an inline frame), keeps the stored form it was hydrated with, or becomes a new
blob (a whole value, or the chunks of a list), so that the payload fits its budget.

Three policies:

* ``legacy`` — the original system's path, exactly: a field is offloaded only when its name is
  one of the data-plane fields and its JSON is over 10 KB; each offloaded field is one
  uncompressed object; a field read during the step is written again in full, a field never
  read keeps its pointer; nothing else, whatever its size, leaves the payload.
* ``batched`` — data-plane values over ``inline_threshold`` are kept in the payload as
  compressed inline frames; only when the payload would exceed its budget do the largest go
  to one pack per temperature group (an append-only list as sealed chunks plus an inline
  tail, so a later step stores only new chunks). Control-plane fields stay plain JSON for the
  orchestrator's path expressions, unless the budget leaves no choice. A field read but not
  changed keeps its stored form.
* ``objects`` — what a dehydration falls back to when the manifest service is unreachable:
  every value over ``inline_threshold`` to an object of its own, nothing reused, the payload
  within its budget.

Pure: nothing here reads or writes a store. Packing gives each new blob its pointer
(``PendingBlob.ref``); only then can the plans be rendered into the stored entries.
"""

from __future__ import annotations

from .._record import Record
from .bag import StateBag
from .canonical import canonical_json, item_value_jsons, parse_json, sha256_hex, value_json
from .chunking import join_items, seal_ranges
from .codec import GZIP
from .config import META_KEY
from .errors import BlobTooLargeError
from .inline import decode_inline, encode_inline, encoded_size
from .keys import pack_key
from .pointers import TAG, BlobRef, ChunkRef, InlineRef, ListRef, literal_json, needs_escape
from .policy import (
    LEGACY,
    LEGACY_OFFLOAD_BYTES,
    OBJECTS,
    PlanningConfig,
)
from .temperature import Temperature

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

# The payload's metadata at its longest: ids of 128 characters, a manifest hash, a version.
_META_SIZE_BOUND = 320 + 3 * 128


# Plans: what a dehydration decided for each field, before anything is written ------------
class InlineValue(Record):
    """Stays in the payload as ``stored`` (the value, or its escape when it looks like a pointer)."""

    stored: Any
    size: int
    raw: bytes | None = None  # the value's JSON, when known: offloading it needs no encoding


class KeptPointer(Record):
    """An untouched field whose stored pointer is carried over as it is."""

    stored: Any
    size: int


class InlineFrame(Record):
    """A data-plane value kept in the payload, compressed."""

    ref: InlineRef
    raw: bytes
    temperature: Temperature
    value: Any = None  # kept to chunk a list without decoding it again; None: decode ``raw``

    @property
    def size(self) -> int:
        return encoded_size(self.ref)


class PendingBlob(Record):
    """A value to store as one blob; ``ref`` is set once packing has placed it."""

    digest: str
    raw: bytes
    temperature: Temperature
    ref: BlobRef | None = None


class ChunkedList(Record):
    """An append-only list: sealed chunks become blobs, the open tail stays inline."""

    chunks: list[tuple[PendingBlob, int]]  # each chunk's blob and how many items it holds
    tail: list[Any]
    tail_bytes: list[bytes]
    length: int
    item_bytes: list[bytes]

    @property
    def tail_size(self) -> int:
        return sum(len(b) + 1 for b in self.tail_bytes) + 1


FieldPlan = InlineValue | KeptPointer | InlineFrame | PendingBlob | ChunkedList


def pending_blob(raw: bytes, temperature: Temperature) -> PendingBlob:
    return PendingBlob(sha256_hex(raw), raw, temperature)


# From a state to plans ------------------------------------------------------------------
def plan_state(
    state: Mapping[str, Any], config: PlanningConfig, *, keep_read: bool = True
) -> dict[str, FieldPlan]:
    """``keep_read=False``: a field that was read is planned from its value even when unchanged
    (after a commit found a stored form it would keep collected meanwhile)."""
    plans: dict[str, FieldPlan] = {}
    bag = state if isinstance(state, StateBag) else None
    for name in state:
        if name == META_KEY:
            continue
        if not isinstance(name, str):
            raise TypeError("state field names must be strings")
        if bag is not None and config.policy != OBJECTS and _keeps_stored_form(bag, name, config, keep_read):
            pointer = bag.pointer(name)
            stored = bag.stored_form(name)
            if isinstance(pointer, InlineRef):
                # Kept as it is, unless the budget moves it out: then its bytes are needed.
                raw = decode_inline(pointer, config.max_blob_bytes)
                plans[name] = InlineFrame(pointer, raw, config.temperatures.of(name))
                continue
            size = len(canonical_json(stored))
            is_ref = isinstance(pointer, BlobRef | ListRef)
            plans[name] = KeptPointer(stored, size) if is_ref else InlineValue(stored, size)
        else:
            plans[name] = plan_value(name, state[name], config)
    return plans


def _keeps_stored_form(bag: StateBag, name: str, config: PlanningConfig, keep_read: bool) -> bool:
    """A field never read keeps its stored form on every path (the original's too); batched, a
    field read but left as it was keeps it as well, where the original writes it again."""
    if bag.untouched(name):
        return True
    return keep_read and config.use_batching and bag.unchanged(name)


def plan_value(name: str, value: Any, config: PlanningConfig) -> FieldPlan:
    if config.policy == LEGACY:
        return _plan_legacy(name, value, config)
    raw = value_json(value)
    check_blob_size(name, raw, config)
    if len(raw) <= config.inline_threshold:
        return _plain(value, raw)
    temperature = config.temperatures.of(name)
    if config.policy == OBJECTS:
        return PendingBlob(sha256_hex(raw), raw, temperature)
    if name in config.data_plane:
        digest = sha256_hex(raw)
        # A frame that could not fit the payload is given up on after its first blocks.
        frame = encode_inline(raw, digest, limit=config.payload_budget) if config.inline_frames else None
        if frame is not None:
            return InlineFrame(frame, raw, temperature, value)
        if isinstance(value, list):
            return _plan_list(value, raw, temperature, config, digest)
        return PendingBlob(digest, raw, temperature)
    return _plain(value, raw)


def _plan_legacy(name: str, value: Any, config: PlanningConfig) -> FieldPlan:
    raw = value_json(value)
    check_blob_size(name, raw, config)
    if name in config.data_plane and legacy_size(value, raw) > LEGACY_OFFLOAD_BYTES:
        return PendingBlob(sha256_hex(raw), raw, config.temperatures.of(name))
    return _plain(value, raw)


def legacy_size(value: Any, raw: bytes) -> int:
    """The size the original measures a field by: the standard library's default JSON (a space
    after each separator, non-ASCII escaped), never shorter than the compact form. Computed
    only where the two could fall on either side of the threshold."""
    if len(raw) > LEGACY_OFFLOAD_BYTES:
        return len(raw)
    import json  # the legacy path only, for fields under its threshold

    return len(json.dumps(value))


def _plain(value: Any, raw: bytes) -> InlineValue:
    if needs_escape(value):
        stored = literal_json(value)
        return InlineValue(stored, len(canonical_json(stored)), raw)
    return InlineValue(value, len(raw), raw)


def _plan_list(
    value: list[Any], raw: bytes, temperature: Temperature, config: PlanningConfig, digest: str | None = None
) -> FieldPlan:
    """An append-only list as sealed chunks and an inline tail, unless it has too many chunks
    for their pointers to fit the payload: then one blob."""
    if len(raw) // config.chunk_target * 256 > config.payload_budget // 2:
        return PendingBlob(digest or sha256_hex(raw), raw, temperature)
    item_bytes = item_value_jsons(value, raw)  # the whole is searched already: not each item again
    ranges, tail_start = seal_ranges([len(b) for b in item_bytes], config.chunk_target)
    chunks = [
        (pending_blob(join_items(item_bytes[start:end]), temperature), end - start) for start, end in ranges
    ]
    return ChunkedList(chunks, value[tail_start:], item_bytes[tail_start:], len(value), item_bytes)


def plan_field_map(entries: dict[str, Any], config: PlanningConfig) -> PendingBlob:
    """For a state with too many fields for even their pointers to fit: the whole field map
    as one blob, so the payload carries only its pointer."""
    raw = value_json(entries)
    check_blob_size("(field map)", raw, config)
    return pending_blob(raw, Temperature.COLD)


def check_blob_size(name: str, raw: bytes, config: PlanningConfig) -> None:
    if len(raw) > config.max_blob_bytes:
        raise BlobTooLargeError(
            f"field {name!r} is {len(raw)} bytes, over the {config.max_blob_bytes}-byte ceiling"
        )


# Fitting the budget ---------------------------------------------------------------------
def fit_budget(plans: dict[str, FieldPlan], owner_id: str, config: PlanningConfig) -> bool:
    """Offload the largest inline parts until the payload fits its budget (``plans`` is
    updated in place); False when even every pointer together would not fit."""
    pointer_size = pointer_size_bound(owner_id)
    total = _META_SIZE_BOUND + sum(len(n) + 4 + plan_size(p, pointer_size) for n, p in plans.items())
    if total <= config.payload_budget:
        return True
    # Largest savings first. A list takes up to three passes to become one blob (from its
    # inline frame to chunks, seal its tail, give up chunking), so a smaller field is
    # offloaded before that happens.
    for _ in range(3):
        order = sorted(((reducible(p, pointer_size), n) for n, p in plans.items()), reverse=True)
        for saving, name in order:
            if total <= config.payload_budget:
                return True
            if saving <= 0:
                break
            before = plan_size(plans[name], pointer_size)
            plans[name] = offload(name, plans[name], config)
            total += plan_size(plans[name], pointer_size) - before
    return total <= config.payload_budget


def offload(name: str, plan: FieldPlan, config: PlanningConfig) -> FieldPlan:
    """One step of moving a field's bytes out of the payload."""
    temperature = config.temperatures.of(name)
    if isinstance(plan, InlineFrame):
        value = parse_json(plan.raw) if plan.value is None else plan.value
        if isinstance(value, list):
            return _plan_list(value, plan.raw, temperature, config, plan.ref.digest)
        return PendingBlob(plan.ref.digest, plan.raw, temperature)
    if isinstance(plan, ChunkedList) and plan.tail:
        # Seal the tail early as an extra chunk; its items are stored once more later
        # when the regular chunk around them seals, which stays bounded by chunk_target.
        chunk = (pending_blob(join_items(plan.tail_bytes), temperature), len(plan.tail))
        return ChunkedList([*plan.chunks, chunk], [], [], plan.length, plan.item_bytes)
    if isinstance(plan, ChunkedList):
        # So many chunks that their pointers alone overflow the budget: store the list
        # as one blob. Correct and bounded; appends to it are no longer incremental.
        return pending_blob(join_items(plan.item_bytes), temperature)
    assert isinstance(plan, InlineValue)
    return pending_blob(plan.raw if plan.raw is not None else value_json(_unescape(plan.stored)), temperature)


# Size bounds ----------------------------------------------------------------------------
def pointer_size_bound(owner_id: str) -> int:
    """The longest a blob pointer of this owner can be in the payload."""
    big = 10**12
    ref = BlobRef(
        "f" * 64, pack_key(owner_id, "f" * 64) + ".0000000000000000", big, big, GZIP, big, "f" * 32, True
    )
    return len(canonical_json(ref.to_json())) + 8


def plan_size(plan: FieldPlan, pointer_size: int) -> int:
    """An upper bound of the plan's bytes in the payload."""
    if isinstance(plan, InlineValue | KeptPointer | InlineFrame):
        return plan.size
    if isinstance(plan, PendingBlob):
        return pointer_size
    return 64 + len(plan.chunks) * (pointer_size + 8) + plan.tail_size


def reducible(plan: FieldPlan, pointer_size: int) -> int:
    """How many payload bytes offloading this plan would save."""
    if isinstance(plan, InlineValue):
        return plan.size - pointer_size
    if isinstance(plan, InlineFrame):
        # Chunks keep the tail inline, so a list saves less than its frame; a bound is enough
        # to order the candidates.
        return plan.size - pointer_size
    if isinstance(plan, ChunkedList):
        if plan.tail:
            return plan.tail_size - pointer_size
        return plan_size(plan, pointer_size) - pointer_size
    return 0


# From plans to entries ------------------------------------------------------------------
def blobs_of(plans: Mapping[str, FieldPlan]) -> list[PendingBlob]:
    """The blobs the plans need stored, in field order."""
    blobs: list[PendingBlob] = []
    for plan in plans.values():
        if isinstance(plan, PendingBlob):
            blobs.append(plan)
        elif isinstance(plan, ChunkedList):
            blobs.extend(blob for blob, _ in plan.chunks)
    return blobs


def render_entries(plans: Mapping[str, FieldPlan]) -> dict[str, Any]:
    """Each field's stored form: its inline value or its pointer JSON. Needs every blob placed."""
    return {name: render_entry(plan) for name, plan in plans.items()}


def render_entry(plan: FieldPlan) -> Any:
    if isinstance(plan, InlineValue | KeptPointer):
        return plan.stored
    if isinstance(plan, InlineFrame):
        return plan.ref.to_json()
    if isinstance(plan, PendingBlob):
        assert plan.ref is not None, "render after packing"
        return plan.ref.to_json()
    chunks = []
    for blob, items in plan.chunks:
        assert blob.ref is not None, "render after packing"
        chunks.append(ChunkRef(blob.ref, items))
    return ListRef(plan.length, tuple(chunks), tuple(plan.tail)).to_json()


def _unescape(stored: Any) -> Any:
    if isinstance(stored, dict) and stored.get(TAG) == "lit":
        return stored["value"]
    return stored
