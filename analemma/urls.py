from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import path

from analemma.api import api
from rollout import api as rollout_api


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path(rollout_api.PATH.lstrip("/"), rollout_api.flagset, name="flagset"),
    path("api/v1/", api.urls),
]
