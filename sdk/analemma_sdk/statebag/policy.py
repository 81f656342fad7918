"""How a hydrator lays out state: the policy (the original's legacy path, batched, or one
object per value when the manifest service is down), the limits, and the original system's
data-plane fields. Apart from planning.py so that a hydrator can be built, and a payload read,
without loading the code that plans and packs a dehydration."""

from __future__ import annotations

from .._record import Record, factory
from .temperature import TemperatureRegistry

HARD_PAYLOAD_CEILING = 256 * 1024
DEFAULT_PAYLOAD_BUDGET = 16 * 1024
DEFAULT_INLINE_THRESHOLD = 1024
DEFAULT_CHUNK_TARGET = 8 * 1024
DEFAULT_MAX_BLOB_BYTES = 64 * 1024 * 1024
# The original system's legacy path: what it may offload, and from what size.
DATA_PLANE_FIELDS = frozenset(
    {
        "workflow_config",
        "partition_map",
        "segment_manifest",
        "current_state",
        "final_state",
        "state_history",
        "parallel_results",
        "branch_results",
        "callback_result",
        "llm_response",
        "query_results",
        "step_history",
        "messages",
        "thought_signature",
        "thinking_process",
        "thought_steps",
    }
)
LEGACY_OFFLOAD_BYTES = 10 * 1024
LEGACY = "legacy"
BATCHED = "batched"
OBJECTS = "objects"
POLICIES = (LEGACY, BATCHED, OBJECTS)


class PlanningConfig(Record, frozen=True):
    policy: str = LEGACY
    inline_threshold: int = DEFAULT_INLINE_THRESHOLD
    payload_budget: int = DEFAULT_PAYLOAD_BUDGET
    chunk_target: int = DEFAULT_CHUNK_TARGET
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES
    temperatures: TemperatureRegistry = factory(default_factory=TemperatureRegistry)
    data_plane: frozenset[str] = DATA_PLANE_FIELDS
    inline_frames: bool = True  # batched: off puts every large data-plane value in a pack

    @property
    def use_batching(self) -> bool:
        return self.policy == BATCHED

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}")
        if not 1024 <= self.payload_budget <= HARD_PAYLOAD_CEILING:
            raise ValueError(f"payload_budget must be 1024-{HARD_PAYLOAD_CEILING} bytes")
        if not 0 <= self.inline_threshold < self.payload_budget:
            raise ValueError("inline_threshold must be below payload_budget")
        if self.chunk_target < 256:
            raise ValueError("chunk_target must be at least 256 bytes")
