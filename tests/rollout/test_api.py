import pytest
from django.urls import reverse

from keys.services import key_revoke
from rollout import services
from rollout.models import Environment, Flag

from ..factories import sdk_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rollout_defaults")]


@pytest.fixture
def prod_key():
    _, raw = sdk_key(Environment.objects.get(key="prod"), actor="ops")
    return raw


def fetch(client, key, etag=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    if etag:
        headers["HTTP_IF_NONE_MATCH"] = etag
    return client.get(reverse("flagset"), **headers)


def test_flagset__valid_key__document_of_its_environment_with_strong_etag(client, prod_key):
    response = fetch(client, prod_key)
    assert response.status_code == 200
    body = response.json()
    assert body["environment"] == "prod" and "use_zstd" in body["flags"]
    assert response["ETag"].startswith('"') and not response["ETag"].startswith("W/")
    assert "no-cache" in response["Cache-Control"] and response["Vary"] == "Authorization"


def test_flagset__if_none_match__304_and_no_query(client, prod_key, django_assert_num_queries):
    etag = fetch(client, prod_key)["ETag"]
    with django_assert_num_queries(0):
        response = fetch(client, prod_key, etag)
    assert response.status_code == 304 and response["ETag"] == etag


def test_flagset__cached_200__no_query(client, prod_key, django_assert_num_queries):
    fetch(client, prod_key)
    with django_assert_num_queries(0):
        assert fetch(client, prod_key).status_code == 200


def test_flagset__after_change__new_etag_and_document(client, prod_key):
    first = fetch(client, prod_key)
    services.flag_state_update(
        flag=Flag.objects.get(key="use_batching"),
        environment=Environment.objects.get(key="prod"),
        actor="a",
        enabled=True,
        value=True,
        percentage="25",
    )
    second = fetch(client, prod_key, first["ETag"])
    assert second.status_code == 200 and second["ETag"] != first["ETag"]
    assert second.json()["flags"]["use_batching"]["percentage"] == 25.0


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Basic abc", "Bearer ask_prod_wrong", "Bearer " + "x" * 5000]
)
def test_flagset__missing_or_wrong_key__401_without_hints(client, prod_key, header):
    headers = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get(reverse("flagset"), **headers)
    assert response.status_code == 401 and response.json() == {
        "error": "unauthorized",
        "code": "unauthorized",
    }


def test_flagset__revoked_key__401(client, prod_key):
    key = Environment.objects.get(key="prod").sdk_keys.get()
    assert fetch(client, prod_key).status_code == 200
    key_revoke(key=key, actor="ops")
    assert fetch(client, prod_key).status_code == 401


def test_flagset__keys_of_two_environments__each_sees_its_own(client, prod_key):
    _, dev_key = sdk_key(Environment.objects.get(key="dev"), actor="ops")
    services.flag_state_update(
        flag=Flag.objects.get(key="use_2pc"),
        environment=Environment.objects.get(key="dev"),
        actor="a",
        enabled=True,
        value=True,
    )
    assert fetch(client, dev_key).json()["flags"]["use_2pc"]["enabled"] is True
    assert fetch(client, prod_key).json()["flags"]["use_2pc"]["enabled"] is False


def test_flagset__sdk_key__cannot_write(client, prod_key):
    response = client.post(reverse("flagset"), HTTP_AUTHORIZATION=f"Bearer {prod_key}")
    assert response.status_code == 405
    job = client.post(
        reverse("api:statebag-jobs"),
        data="{}",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {prod_key}",
    )
    assert job.status_code == 401


def test_flagset__redis_cache__warm_paths_make_no_query(
    client, settings, redis_url, django_assert_num_queries
):
    settings.CACHES = {"default": {"BACKEND": "analemma.cache.ReusedClientRedisCache", "LOCATION": redis_url}}
    settings.CACHE_SHARED, settings.KEY_CACHE_SECONDS = True, 300
    from django.core.cache import cache

    cache.clear()
    _, key = sdk_key(Environment.objects.get(key="staging"), actor="ops")
    services.flag_state_update(
        flag=Flag.objects.get(key="use_zstd"),
        environment=Environment.objects.get(key="staging"),
        actor="a",
        enabled=True,
        value=True,
    )
    etag = fetch(client, key)["ETag"]
    with django_assert_num_queries(0):
        assert fetch(client, key, etag).status_code == 304
        warm = fetch(client, key)
    assert warm.status_code == 200 and warm.json()["flags"]["use_zstd"]["enabled"] is True
    cache.clear()
