"""Small value classes for the engine: fields from annotations, keyword or positional
construction, equality, repr, and optionally frozen (then hashable).

The standard library's dataclasses would do, but importing it pulls in inspect, ast, dis and
tokenize, and each class it builds compiles generated code: about 25 ms of a Lambda's cold
start for the state bag's seventeen classes, measured with ``python -X importtime``.

    class BlobRef(Record, frozen=True):
        digest: str
        dict_id: str | None = None
        extras: dict[str, Any] = factory(default_factory=dict)

Type checkers read these classes as dataclasses (PEP 681, ``typing.dataclass_transform``).
At run time that decorator only sets a marker, so ``typing`` itself (a few milliseconds of a
cold start, with the regular expressions it compiles) is imported for type checkers only.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar, TypeVar, dataclass_transform

    _T = TypeVar("_T")
else:

    def dataclass_transform(**kwargs: object) -> object:
        """``typing.dataclass_transform`` at run time: it only marks the class."""

        def mark(cls: type) -> type:
            cls.__dataclass_transform__ = kwargs  # type: ignore[attr-defined]  # typing's marker
            return cls

        return mark


_MISSING = object()


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Any) -> None:
        self.make = make


def factory(*, default_factory: Callable[[], _T]) -> _T:
    """A default built afresh for each instance (``factory(default_factory=list)``). The keyword
    is what tells type checkers that the field has a default."""
    # Stands in for the value until __init__ builds one; typed as the value for the field.
    return _Factory(default_factory)  # type: ignore[return-value]  # see above


@dataclass_transform(field_specifiers=(factory,))
class Record:
    _fields: ClassVar[tuple[str, ...]] = ()
    _field_set: ClassVar[frozenset[str]] = frozenset()
    _post_init: ClassVar[bool] = False
    _defaults: ClassVar[dict[str, Any]] = {}  # replaced per subclass, never mutated
    _frozen: ClassVar[bool] = False
    __match_args__: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, frozen: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: list[str] = []
        defaults: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            for name in klass.__dict__.get("__annotations__", {}):
                if name.startswith("_"):
                    continue
                if name not in fields:
                    fields.append(name)
                if name in klass.__dict__:
                    defaults[name] = klass.__dict__[name]
        cls._fields, cls._defaults, cls._frozen = tuple(fields), defaults, frozen
        cls._field_set = frozenset(fields)
        cls._post_init = hasattr(cls, "__post_init__")
        # Type checkers derive both from the fields and the frozen flag; only the runtime needs
        # them set here. Frozen records hash by value, mutable ones are unhashable (as dataclasses).
        cls.__match_args__ = tuple(fields)  # type: ignore[misc]  # read-only to type checkers
        cls.__hash__ = Record._hash if frozen else None  # type: ignore[assignment,method-assign]  # see above

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args:
            kwargs = self._with_positional(args, kwargs)
        if kwargs.keys() != self._field_set:
            kwargs = self._completed(kwargs)
        self.__dict__.update(kwargs)
        if self._post_init:
            self.__post_init__()  # type: ignore[attr-defined]  # _post_init says the subclass has one

    def _with_positional(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} takes {len(fields)} arguments, {len(args)} given")
        values = dict(zip(fields, args, strict=False))
        for name in kwargs:
            if name in values:
                raise TypeError(f"{type(self).__name__} got {name!r} twice")
        values.update(kwargs)
        return values

    def _completed(self, values: dict[str, Any]) -> dict[str, Any]:
        for name in values:
            if name not in self._field_set:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
        for name in self._fields:
            if name not in values:
                default = self._defaults.get(name, _MISSING)
                if default is _MISSING:
                    raise TypeError(f"{type(self).__name__} is missing {name!r}")
                values[name] = default.make() if isinstance(default, _Factory) else default
        return values

    def __setattr__(self, name: str, value: Any) -> None:
        if self._frozen:
            raise AttributeError(f"{type(self).__name__} is frozen: cannot assign {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if self._frozen:
            raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")
        object.__delattr__(self, name)

    def _values(self) -> tuple[Any, ...]:
        return tuple(self.__dict__[name] for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__ or not isinstance(other, Record):
            return NotImplemented
        return self._values() == other._values()

    def _hash(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={self.__dict__[name]!r}" for name in self._fields)
        return f"{type(self).__name__}({inner})"
