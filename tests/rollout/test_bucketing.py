"""The service's flag sets bucket units as the pinned vectors say: a flag configured on the
server with a vector's salt and percentage (or weights) is served as a document that puts
each unit where tests/data/bucketing_vectors.json puts it."""

import pytest

from analemma_sdk.flags.document import FlagSet
from rollout import services
from rollout.models import Environment, Flag

from ..bucketing_vectors import VECTORS

pytestmark = pytest.mark.django_db


def served(flag_key: str, **state):
    prod = Environment.objects.get(key="prod")
    revision = services.flag_state_update(
        flag=Flag.objects.get(key=flag_key), environment=prod, actor="vectors", enabled=True, **state
    )
    return FlagSet(revision.document, environment="prod").flags[flag_key]


def variant_values(flag_key: str, count: int) -> list:
    kind = Flag.objects.get(key=flag_key).kind
    return [
        {"boolean": index % 2 == 0, "number": index + 1, "string": str(index)}[kind] for index in range(count)
    ]


@pytest.fixture(autouse=True)
def checkout():
    services.flag_create(key="checkout-v2", kind="string", default_value="old", actor="vectors")


def test_served_documents__percentage_rollouts__units_in_and_out_as_pinned():
    for case in VECTORS["rollout"]:
        value = (
            9 if case["flag_key"] == "zstd_level" else ("new" if case["flag_key"] == "checkout-v2" else True)
        )
        flag = served(
            case["flag_key"], value=value, salt=case["salt"], percentage=case["percentage"], variants=[]
        )
        _, _, reason = flag.evaluate(case["unit"], None)
        assert (reason == "rollout") is case["in"], case


def test_served_documents__variants__each_unit_gets_the_pinned_variant():
    for case in VECTORS["variants"]:
        values = variant_values(case["flag_key"], len(case["weights"]))
        variants = [{"value": v, "weight": w} for v, w in zip(values, case["weights"], strict=True)]
        flag = served(case["flag_key"], salt=case["salt"], variants=variants)
        _, variant, _ = flag.evaluate(case["unit"], None)
        assert variant == str(case["index"]), case
