"""JSON typed by operators, in admin fields and command options.

Python's json module reads ``NaN``, ``Infinity`` and ``-Infinity``, and turns a number too
large for a float (``1e400``) into infinity. None of them has a JSON form: an SDK could not
read a document carrying one, and PostgreSQL refuses them. They are refused here, with a
message naming them, before any service sees the value."""

from __future__ import annotations

import json
import math
from typing import Any

from django import forms
from django.core.exceptions import ValidationError


class NonFiniteNumberError(json.JSONDecodeError):
    """A number JSON cannot carry. ``msg`` says which; the position is not known."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "", 0)


def _no_constant(name: str) -> Any:
    raise NonFiniteNumberError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise NonFiniteNumberError(f"{text} is too large for a number")
    return number


def _finite_int(text: str) -> int:
    try:
        number = int(text)
        float(number)  # an SDK reads JSON numbers as doubles
    except (OverflowError, ValueError):
        raise NonFiniteNumberError(f"{text[:20]}… is too large for a number") from None
    return number


class FiniteJSONDecoder(json.JSONDecoder):
    """json.JSONDecoder that refuses NaN, infinities and numbers beyond a double's range."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.update(parse_constant=_no_constant, parse_float=_finite_float, parse_int=_finite_int)
        super().__init__(**kwargs)


def json_problem(error: json.JSONDecodeError) -> str:
    return error.msg if isinstance(error, NonFiniteNumberError) else str(error)


def json_loads_finite(text: str) -> Any:
    """``json.loads`` for operator input; json.JSONDecodeError (a ValueError) for text that is
    not JSON or carries a number JSON cannot (``json_problem`` words it)."""
    return json.loads(text, cls=FiniteJSONDecoder)


class FiniteJSONField(forms.JSONField):
    """The admin's JSON field: refuses NaN, Infinity and 1e400 with a message saying so, and
    keeps what the operator typed on the page."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["decoder"] = FiniteJSONDecoder
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        if self.disabled or value in self.empty_values or not isinstance(value, str):
            return super().to_python(value)
        try:
            json.loads(value, cls=self.decoder)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                "Enter valid JSON: %(problem)s.", code="invalid", params={"problem": json_problem(exc)}
            ) from None
        return super().to_python(value)
