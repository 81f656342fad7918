"""Temperature groups: fields that change together are packed together (the original system's HOT/WARM/COLD)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Temperature(StrEnum):
    HOT = "hot"
    WARM = "warm"
    COLD = "cold"


DEFAULT_TEMPERATURES: Mapping[str, Temperature] = {
    **dict.fromkeys(
        ("llm_response", "current_state", "token_usage", "thought_signature", "callback_result"),
        Temperature.HOT,
    ),
    **dict.fromkeys(
        ("step_history", "messages", "query_results", "parallel_results", "branch_results", "state_history"),
        Temperature.WARM,
    ),
    **dict.fromkeys(
        ("workflow_config", "partition_map", "segment_manifest", "final_state"),
        Temperature.COLD,
    ),
}


class TemperatureRegistry:
    """Maps field names to groups; unknown fields are WARM. Overrides win over the defaults."""

    def __init__(self, overrides: Mapping[str, Temperature | str] | None = None) -> None:
        self._map: dict[str, Temperature] = dict(DEFAULT_TEMPERATURES)
        for name, temperature in (overrides or {}).items():
            self._map[name] = Temperature(temperature)

    def of(self, field: str) -> Temperature:
        return self._map.get(field, Temperature.WARM)
