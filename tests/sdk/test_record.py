"""The engine's value classes: construction, defaults, equality, hashing and freezing."""

from __future__ import annotations

import pytest

from analemma_sdk._record import Record, factory


class Point(Record, frozen=True):
    x: int
    y: int = 0
    tags: list[str] = factory(default_factory=list)


class Box(Record):
    content: str
    seen: int = 0

    def __post_init__(self) -> None:
        self.seen += 1


def test_construction__positional_keyword_and_defaults():
    assert Point(1, 2) == Point(x=1, y=2) == Point(1, y=2)
    assert Point(1).y == 0 and Point(1).tags == [] and Point(1).tags is not Point(1).tags
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"


@pytest.mark.parametrize(
    "args, kwargs",
    [((), {}), ((1, 2, [], 4), {}), ((1,), {"x": 2}), ((), {"x": 1, "z": 3})],
)
def test_construction__wrong_arguments__type_error(args, kwargs):
    with pytest.raises(TypeError):
        Point(*args, **kwargs)


def test_frozen__no_assignment__hashable_by_value():
    point = Point(1, 2)
    with pytest.raises(AttributeError):
        point.x = 3
    with pytest.raises(AttributeError):
        del point.y
    assert hash(Point(1, 2, ())) == hash(Point(1, 2, ())) and len({Point(1, 2, ()), Point(1, 2, ())}) == 1


def test_mutable__assignable__unhashable__post_init_runs():
    box = Box("a")
    box.content = "b"
    assert (box.content, box.seen) == ("b", 1)
    with pytest.raises(TypeError):
        hash(box)


def test_equality__other_classes_never_equal():
    class Other(Record, frozen=True):
        x: int
        y: int = 0
        tags: list[str] = factory(default_factory=list)

    assert Point(1) != Other(1) and Point(1) != (1, 0, [])
