"""NaN/Infinity inside what orjson writes of objects that are not plain data (enum members,
dataclass instances) is refused, as everywhere else, rather than written as null."""

import dataclasses
import enum
import math

import pytest

from analemma_sdk.statebag import InvalidValueError
from analemma_sdk.statebag.canonical import canonical_json, value_json


class Reading(enum.Enum):
    MISSING = math.nan
    HALF = 0.5
    NESTED = (1, [math.inf])


@dataclasses.dataclass
class Point:
    x: object
    y: object = 0


@dataclasses.dataclass(slots=True)
class Slotted:
    x: object


@pytest.mark.parametrize(
    "value",
    [
        [None, Point(math.nan)],
        {"a": None, "b": [Point(1.0, {"deep": [-math.inf]})]},
        [None, Slotted([math.inf])],
        [None, Reading.MISSING],
        [None, {"r": Reading.NESTED}],
    ],
    ids=["dataclass", "dataclass-nested", "slotted-dataclass", "enum", "enum-nested"],
)
def test_value_json__nan_inside_an_object_orjson_writes__raises(value):
    with pytest.raises(InvalidValueError):
        value_json(value)
    with pytest.raises(InvalidValueError):
        canonical_json(value)


def test_value_json__finite_objects_orjson_writes__encoded_as_before():
    value = [None, Point(1.5, [2, None]), Slotted("s"), Reading.HALF]
    assert value_json(value) == b'[null,{"x":1.5,"y":[2,null]},{"x":"s"},0.5]'


def test_value_json__dataclass_attributes__searched_as_orjson_writes_them():
    point = Point(1)
    point.extra = math.nan  # written by orjson (a public attribute): refused
    with pytest.raises(InvalidValueError):
        value_json([None, point])
    hidden = Point(1)
    hidden._cache = {"nan": math.nan}  # not written by orjson: not searched either
    assert value_json([None, hidden]) == b'[null,{"x":1,"y":0}]'
