"""The API description is generated from the code (django-ninja's schemas, and the SDK's
flag-set spec for the flag-set endpoint): it must be valid OpenAPI and cover every route."""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from jsonschema import validate as validate_instance
from openapi_spec_validator import validate

from ..factories import sdk_key


def _routes(patterns, prefix=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route


def api_routes() -> set[str]:
    """Every route under api/v1/, as an OpenAPI path."""
    return {
        "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        for route in _routes(get_resolver().url_patterns)
        # api/v1/ itself is the typed layer's anchor for its URLs; it answers 404.
        if route.startswith("api/v1/") and route not in ("api/v1/", "api/v1/openapi.json")
    }


def test_openapi__schema__valid_and_covers_every_api_route(client):
    document = client.get(reverse("api:openapi-json")).json()
    validate(document)
    assert set(document["paths"]) == api_routes()
    assert {"/api/v1/statebag/transactions/{txn_id}/commit", "/api/v1/flagset"} <= api_routes()


def test_openapi__every_error_response__the_error_schema(client):
    document = client.get(reverse("api:openapi-json")).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (path, method, status)


@pytest.mark.django_db
def test_openapi__flagset_response__matches_its_schema(client):
    components = client.get(reverse("api:openapi-json")).json()["components"]["schemas"]
    _, key = sdk_key("dev", actor="t")
    body = client.get(reverse("flagset"), HTTP_AUTHORIZATION=f"Bearer {key}").json()
    flag_set = {**components["FlagSet"], "components": {"schemas": components}}
    validate_instance(body, flag_set)
    for flag in body["flags"].values():
        validate_instance(flag, components["Flag"])
