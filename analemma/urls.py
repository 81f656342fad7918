from django.contrib import admin
from django.urls import path

from analemma import health, metrics
from analemma.api import api
from rollout import api as rollout_api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("livez", health.livez, name="livez"),
    path("readyz", health.readyz, name="readyz"),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
    path(rollout_api.PATH.lstrip("/"), rollout_api.flagset, name="flagset"),
    path("api/v1/", api.urls),
]
