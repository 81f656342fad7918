"""The lazy state bag hydrate() returns: a mapping that fetches a field on first access.

The bag knows nothing of how values are stored: it is handed something that can load a
pointer, so reading and dehydrating can change without touching it.
"""

from __future__ import annotations

from .._containers import MutableMapping
from .canonical import sha256_hex, value_json
from .pointers import BlobRef, InlineRef, Literal, Stored, parse_pointer

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, Protocol

    class PointerLoader(Protocol):
        def load(self, pointer: Stored) -> Any: ...

    _Mapping = MutableMapping[str, Any]
else:
    _Mapping = MutableMapping  # subscripting it would need typing.Any at run time


class StateBag(_Mapping):
    """Fields stay in their stored form until read. Assignments and deletions are tracked;
    in-place edits of a loaded value are found by comparing value bytes (key order counts)."""

    def __init__(
        self,
        loader: PointerLoader,
        stored: dict[str, Any],
        meta: dict[str, Any] | None = None,
    ) -> None:
        self._loader = loader
        self._stored = stored
        self._values: dict[str, Any] = {}
        self._loaded_digests: dict[str, str] = {}
        self._assigned: set[str] = set()
        self._deleted: set[str] = set()
        self.meta = dict(meta or {})
        # Parse every pointer now: a malformed payload fails at hydrate(), not mid-step.
        self._pointers: dict[str, Stored | None] = {
            name: parse_pointer(value) for name, value in stored.items()
        }

    # Mapping protocol -------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        if name in self._deleted or name not in self._stored:
            raise KeyError(name)
        pointer = self._pointers[name]
        if pointer is None:
            value = self._stored[name]
        elif isinstance(pointer, Literal):
            value = pointer.value
        else:
            value = self._loader.load(pointer)
        self._values[name] = value
        # A blob's or frame's digest is already its value's; anything else is hashed once here.
        self._loaded_digests[name] = (
            pointer.digest if isinstance(pointer, BlobRef | InlineRef) else sha256_hex(value_json(value))
        )
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str):
            raise TypeError("state field names must be strings")
        self._values[name] = value
        self._assigned.add(name)
        self._deleted.discard(name)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._values.pop(name, None)
        self._assigned.discard(name)
        self._deleted.add(name)

    def __iter__(self) -> Iterator[str]:
        seen = set()
        for name in self._stored:
            if name not in self._deleted:
                seen.add(name)
                yield name
        for name in self._values:
            if name not in seen and name not in self._deleted:
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, name: object) -> bool:
        if name in self._deleted:
            return False
        return name in self._values or name in self._stored

    def __repr__(self) -> str:
        loaded = sorted(self._values)
        return f"<StateBag fields={len(self)} loaded={loaded}>"

    # Change tracking ----------------------------------------------------------------
    def is_loaded(self, name: str) -> bool:
        return name in self._values

    def stored_form(self, name: str) -> Any:
        return self._stored[name]

    def pointer(self, name: str) -> Stored | None:
        """The pointer the field was hydrated with; None for a plain value or a field that
        was not in the payload. Assignments since do not change it."""
        return self._pointers.get(name)

    def pointers(self) -> dict[str, Stored]:
        """Every field hydrated as a pointer, by name (as hydrated, like ``pointer``)."""
        return {name: pointer for name, pointer in self._pointers.items() if pointer is not None}

    def untouched(self, name: str) -> bool:
        """True when the field was never read nor written: its stored form can be reused."""
        return name in self._stored and name not in self._values and name not in self._deleted

    def unchanged(self, name: str) -> bool:
        """True when the field was read and holds what it was hydrated with: its stored form
        still stands for it. An assignment counts as a change only if the value differs."""
        if name not in self._stored or name in self._deleted or name not in self._loaded_digests:
            return False
        return sha256_hex(value_json(self._values[name])) == self._loaded_digests[name]

    def changed_fields(self) -> set[str]:
        changed = (self._deleted & set(self._stored)) | (self._assigned - set(self._loaded_digests))
        for name in self._values:
            if name not in changed and name in self._stored and not self.unchanged(name):
                changed.add(name)
        return changed

    def has_changes(self) -> bool:
        return bool(self.changed_fields())

    def to_dict(self) -> dict[str, Any]:
        """Load every field and return a plain dict."""
        return {name: self[name] for name in self}
