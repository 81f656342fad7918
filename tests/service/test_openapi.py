import re

import pytest
from django.urls import get_resolver, reverse
from openapi_spec_validator import validate


def api_routes() -> set[str]:
    routes = set()
    for pattern in get_resolver().url_patterns:
        route = str(pattern.pattern)
        if route.startswith("api/v1/") and route != "api/v1/openapi.json":
            routes.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))
    return routes


def test_openapi__schema__valid_and_covers_every_api_route(client):
    document = client.get(reverse("openapi")).json()
    validate(document)
    assert set(document["paths"]) == api_routes()
    assert "/api/v1/statebag/transactions/{txn_id}/commit" in api_routes()


@pytest.mark.django_db
def test_openapi__flagset_response__matches_its_schema(client):
    from jsonschema import validate as validate_instance

    from analemma.openapi import schema
    from rollout import services
    from rollout.models import Environment

    _, key = services.sdk_key_create(environment=Environment.objects.get(key="dev"), actor="t")
    body = client.get(reverse("flagset"), HTTP_AUTHORIZATION=f"Bearer {key}").json()
    components = schema()["components"]["schemas"]
    flag_schema = components["Flag"]
    for flag in body["flags"].values():
        validate_instance(flag, flag_schema)
    assert set(components["FlagSet"]["required"]) <= set(body)
