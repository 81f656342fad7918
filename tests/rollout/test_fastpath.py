import io
from wsgiref.util import setup_testing_defaults

import pytest
from django.core.handlers.wsgi import WSGIHandler

from keys.services import key_revoke
from rollout.fastpath import FlagsetFastPath
from rollout.models import Environment

from ..clock import SteppedClock
from ..factories import sdk_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rollout_defaults")]


class Recorder:
    """The Django application behind the fast path, counting what reaches it."""

    def __init__(self):
        self.django = WSGIHandler()
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        return self.django(environ, start_response)


def call(app, key=None, **extra):
    environ = {
        "PATH_INFO": "/api/v1/flagset",
        "REQUEST_METHOD": "GET",
        "HTTP_HOST": "testserver",
        "wsgi.input": io.BytesIO(),
    }
    if key:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    environ.update(extra)
    setup_testing_defaults(environ)
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


@pytest.fixture
def app():
    recorder = Recorder()
    return FlagsetFastPath(recorder), recorder


@pytest.fixture
def key():
    return sdk_key(Environment.objects.get(key="prod"), actor="t")[1]


def test_fastpath__warm__answers_without_django_same_as_django(app, key):
    fast, django = app
    cold = call(fast, key)  # warms the cache through Django
    assert django.calls == 1 and cold[0] == 200
    warm = call(fast, key)
    assert django.calls == 1
    assert (warm[0], warm[1]["ETag"], warm[2]) == (200, cold[1]["ETag"], cold[2])
    not_modified = call(fast, key, HTTP_IF_NONE_MATCH=cold[1]["ETag"])
    assert not_modified[0] == 304 and not_modified[2] == b"" and django.calls == 1


@pytest.mark.parametrize(
    "extra",
    [
        {"REQUEST_METHOD": "POST"},
        {"HTTP_HOST": "evil.example"},
        {"HTTP_AUTHORIZATION": "Basic x"},
        {"HTTP_AUTHORIZATION": "Bearer nope"},
    ],
)
def test_fastpath__anything_it_cannot_answer__goes_to_django(app, key, extra):
    fast, django = app
    call(fast, key)
    status, _, _ = call(fast, key, **extra)
    assert django.calls == 2 and status in (400, 401, 403, 405)


def test_fastpath__revoked_key__401_from_django(app, key):
    fast, django = app
    assert call(fast, key)[0] == 200
    key_revoke(key=Environment.objects.get(key="prod").sdk_keys.get(), actor="t")
    assert call(fast, key)[0] == 401


def test_fastpath__https_required__plain_http_goes_to_django_and_is_redirected(key, settings):
    settings.SECURE_SSL_REDIRECT = True
    django = Recorder()  # built after the setting, as a deployment's would be
    fast = FlagsetFastPath(django)
    call(fast, key, HTTP_X_FORWARDED_PROTO="https", **{"wsgi.url_scheme": "https"})  # warm
    calls = django.calls
    status, headers, _ = call(fast, key)
    assert django.calls == calls + 1
    assert status == 301 and headers["Location"].startswith("https://")


def test_fastpath__memo__revocation_reaches_the_process_within_its_ttl(key, settings):
    settings.ROLLOUT_FASTPATH_MEMO_SECONDS = 0.3
    clock = SteppedClock()
    fast = FlagsetFastPath(Recorder(), clock=clock)
    call(fast, key)
    call(fast, key)  # memoised now
    key_revoke(key=Environment.objects.get(key="prod").sdk_keys.get(), actor="t")
    assert call(fast, key)[0] == 200  # within the memo's time
    clock.advance(0.35)
    assert call(fast, key)[0] == 401


@pytest.mark.parametrize("secure", [False, True])
def test_fastpath__security_headers__same_as_djangos(key, settings, secure):
    settings.SECURE_HSTS_SECONDS, settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = 31536000, True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    django = Recorder()
    fast = FlagsetFastPath(django)
    extra = {"HTTP_X_FORWARDED_PROTO": "https"} if secure else {}
    _, through_django, _ = call(fast, key, **extra)
    calls = django.calls
    _, from_fast_path, _ = call(fast, key, **extra)
    assert django.calls == calls  # answered by the fast path
    assert from_fast_path == {**through_django, "Content-Length": from_fast_path["Content-Length"]}
    assert ("Strict-Transport-Security" in from_fast_path) is secure
    assert from_fast_path["X-Content-Type-Options"] == "nosniff"
