"""Planning a dehydration: for each field, whether it stays inline in the payload, keeps the
pointer it was hydrated with, or becomes a new blob (a whole value, or the chunks of a list),
so that the payload fits its budget.

Pure: nothing here reads or writes a store. Packing gives each new blob its pointer
(``PendingBlob.ref``); only then can the plans be rendered into the stored entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._record import Record, factory
from .bag import StateBag
from .canonical import canonical_json, sha256_hex
from .chunking import join_items, seal_ranges
from .codec import GZIP
from .config import META_KEY
from .errors import BlobTooLargeError
from .keys import pack_key
from .pointers import TAG, BlobRef, ChunkRef, ListRef, literal_json, needs_escape
from .temperature import Temperature, TemperatureRegistry

HARD_PAYLOAD_CEILING = 256 * 1024
DEFAULT_PAYLOAD_BUDGET = 16 * 1024
DEFAULT_INLINE_THRESHOLD = 1024
DEFAULT_CHUNK_TARGET = 8 * 1024
DEFAULT_MAX_BLOB_BYTES = 64 * 1024 * 1024
# The payload's metadata at its longest: ids of 128 characters, a manifest hash, a version.
_META_SIZE_BOUND = 320 + 3 * 128


class PlanningConfig(Record, frozen=True):
    use_batching: bool = False  # off: every large value is one blob, no list chunking, no reuse
    inline_threshold: int = DEFAULT_INLINE_THRESHOLD
    payload_budget: int = DEFAULT_PAYLOAD_BUDGET
    chunk_target: int = DEFAULT_CHUNK_TARGET
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES
    temperatures: TemperatureRegistry = factory(default_factory=TemperatureRegistry)

    def __post_init__(self) -> None:
        if not 1024 <= self.payload_budget <= HARD_PAYLOAD_CEILING:
            raise ValueError(f"payload_budget must be 1024-{HARD_PAYLOAD_CEILING} bytes")
        if not 0 <= self.inline_threshold < self.payload_budget:
            raise ValueError("inline_threshold must be below payload_budget")
        if self.chunk_target < 256:
            raise ValueError("chunk_target must be at least 256 bytes")


# Plans: what a dehydration decided for each field, before anything is written ------------
class InlineValue(Record):
    """Stays in the payload as ``stored`` (the value, or its escape when it looks like a pointer)."""

    stored: Any
    size: int


class KeptPointer(Record):
    """An untouched field whose stored pointer is carried over as it is."""

    stored: Any
    size: int


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


FieldPlan = InlineValue | KeptPointer | PendingBlob | ChunkedList


def pending_blob(raw: bytes, temperature: Temperature) -> PendingBlob:
    return PendingBlob(sha256_hex(raw), raw, temperature)


# From a state to plans ------------------------------------------------------------------
def plan_state(state: Mapping[str, Any], config: PlanningConfig) -> dict[str, FieldPlan]:
    plans: dict[str, FieldPlan] = {}
    for name in state:
        if name == META_KEY:
            continue
        if not isinstance(name, str):
            raise TypeError("state field names must be strings")
        if config.use_batching and isinstance(state, StateBag) and state.untouched(name):
            # Never read nor written: reuse its stored form without loading it.
            stored = state.stored_form(name)
            size = len(canonical_json(stored))
            is_ref = isinstance(state.pointer(name), BlobRef | ListRef)
            plans[name] = KeptPointer(stored, size) if is_ref else InlineValue(stored, size)
        else:
            plans[name] = plan_value(name, state[name], config)
    return plans


def plan_value(name: str, value: Any, config: PlanningConfig) -> FieldPlan:
    if config.use_batching and isinstance(value, list):
        return _plan_list(name, value, config)
    raw = canonical_json(value)
    check_blob_size(name, raw, config)
    if len(raw) <= config.inline_threshold:
        if needs_escape(value):
            stored = literal_json(value)
            return InlineValue(stored, len(canonical_json(stored)))
        return InlineValue(value, len(raw))
    return pending_blob(raw, config.temperatures.of(name))


def _plan_list(name: str, value: list[Any], config: PlanningConfig) -> FieldPlan:
    whole = canonical_json(value)
    check_blob_size(name, whole, config)
    if len(whole) // config.chunk_target * 256 > config.payload_budget // 2:
        # Too many chunks for their pointers to fit the payload: one blob, and no per-item
        # encoding spent on a chunking that would be thrown away.
        return pending_blob(whole, config.temperatures.of(name))
    item_bytes = [canonical_json(item) for item in value]
    total = sum(len(b) + 1 for b in item_bytes) + 1
    if total <= config.inline_threshold:
        return InlineValue(value, total)
    ranges, tail_start = seal_ranges([len(b) for b in item_bytes], config.chunk_target)
    temperature = config.temperatures.of(name)
    chunks = [
        (pending_blob(join_items(item_bytes[start:end]), temperature), end - start) for start, end in ranges
    ]
    return ChunkedList(chunks, value[tail_start:], item_bytes[tail_start:], len(value), item_bytes)


def plan_field_map(entries: dict[str, Any], config: PlanningConfig) -> PendingBlob:
    """For a state with too many fields for even their pointers to fit: the whole field map
    as one blob, so the payload carries only its pointer."""
    raw = canonical_json(entries)
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
    # Largest savings first. A list takes two passes to become one blob (seal its tail,
    # then give up chunking), so a smaller field is offloaded before that happens.
    for _ in range(2):
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
    return pending_blob(canonical_json(_unescape(plan.stored)), temperature)


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
    if isinstance(plan, InlineValue | KeptPointer):
        return plan.size
    if isinstance(plan, PendingBlob):
        return pointer_size
    return 64 + len(plan.chunks) * (pointer_size + 8) + plan.tail_size


def reducible(plan: FieldPlan, pointer_size: int) -> int:
    """How many payload bytes offloading this plan would save."""
    if isinstance(plan, InlineValue):
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
