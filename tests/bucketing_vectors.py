"""Checks a bucketing module against tests/data/bucketing_vectors.json (server and SDK alike)."""

import json
from pathlib import Path
from types import ModuleType

VECTORS = json.loads((Path(__file__).parent / "data" / "bucketing_vectors.json").read_text())


def assert_matches_vectors(module: ModuleType) -> None:
    for case in VECTORS["bucket_value"]:
        got = module.bucket_value(case["flag_key"], case["salt"], case["unit"], case["seed"])
        assert got == case["value"], case
    for case in VECTORS["rollout"]:
        value = module.bucket_value(case["flag_key"], case["salt"], case["unit"])
        assert module.in_rollout(value, case["percentage"]) is case["in"], case
    for case in VECTORS["variants"]:
        value = module.bucket_value(case["flag_key"], case["salt"], case["unit"])
        assert module.variant_index(value, case["weights"]) == case["index"], case
