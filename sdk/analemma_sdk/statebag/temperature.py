"""Temperature groups: fields that change together are packed together (the original system's HOT/WARM/COLD)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from enum import StrEnum

    class Temperature(StrEnum):
        HOT = "hot"
        WARM = "warm"
        COLD = "cold"

else:

    class _Group(type):
        """Behaves as StrEnum's metaclass where the engine and callers use it: iteration in
        order, lookup by value. ``enum`` itself (with the functools and collections it
        imports) is ~4 ms of a cold start."""

        def __iter__(cls) -> Iterator[Temperature]:
            return iter(cls._members)

        def __len__(cls) -> int:
            return len(cls._members)

        def __call__(cls, value: object) -> Temperature:
            for member in cls._members:
                if member == value:
                    return member
            raise ValueError(f"{value!r} is not a valid {cls.__name__}")

    class Temperature(str, metaclass=_Group):
        """A field's group: "hot", "warm" or "cold"; a str, so it is written as itself."""

        __slots__ = ()
        _members: tuple[Temperature, ...] = ()

        @property
        def name(self) -> str:
            return self.upper()

        @property
        def value(self) -> str:
            return str(self)

        def __repr__(self) -> str:
            return f"<Temperature.{self.name}: {str(self)!r}>"

        def __reduce__(self) -> tuple[object, tuple[str]]:
            return Temperature, (str(self),)

    Temperature._members = tuple(str.__new__(Temperature, name) for name in ("hot", "warm", "cold"))
    Temperature.HOT, Temperature.WARM, Temperature.COLD = Temperature._members


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
