"""A distinct-unit estimate is never above the evaluations it comes with: every unit was
evaluated at least once, and a sketch of a few units can overshoot."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from telemetry.models import EvaluationRollup
from telemetry.selectors import exposures, exposures_by_minute
from telemetry.sketch import sketch_add, sketch_empty, sketch_estimate

pytestmark = pytest.mark.django_db

MINUTE = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_exposures__sketch_overshoots_a_small_count__units_capped_at_evaluations():
    sketch = sketch_empty()
    for unit in range(40):
        sketch_add(sketch, f"unit-{unit}")
    assert sketch_estimate(bytes(sketch)) > 3  # what the rows below would report uncapped
    EvaluationRollup.objects.create(
        environment="prod",
        minute=MINUTE,
        flag="use_zstd",
        variant=None,
        value="true",
        reason="fallthrough",
        series="s1",
        evaluations=3,  # fewer evaluations than the sketch says units: only an estimate can say so
        units=bytes(sketch),
    )

    [total] = exposures(environment="prod", flag="use_zstd", since=MINUTE)
    [point] = exposures_by_minute(environment="prod", flag="use_zstd", since=MINUTE)

    assert total.evaluations == 3 and total.units == 3.0
    assert point.evaluations == 3 and point.units == 3.0
