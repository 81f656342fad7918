from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import path

from analemma.openapi import openapi_view
from rollout import api as rollout_api
from statebag import api as statebag_api
from statebag import remote_api


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("api/v1/openapi.json", openapi_view, name="openapi"),
    path("api/v1/flagset", rollout_api.flagset, name="flagset"),
    path("api/v1/statebag/jobs", statebag_api.job_create, name="statebag-jobs"),
    path("api/v1/statebag/jobs/<uuid:job_id>", statebag_api.job_detail, name="statebag-job"),
    path("api/v1/statebag/transactions", remote_api.transaction_prepare, name="statebag-prepare"),
    path(
        "api/v1/statebag/transactions/<str:txn_id>/commit",
        remote_api.transaction_commit,
        name="statebag-commit",
    ),
    path(
        "api/v1/statebag/transactions/<str:txn_id>/abort", remote_api.transaction_abort, name="statebag-abort"
    ),
    path(
        "api/v1/statebag/executions/<str:execution_id>/manifests/<str:version>",
        remote_api.manifest_detail,
        name="statebag-manifest",
    ),
    path("api/v1/statebag/uploads/<str:token>", remote_api.upload, name="statebag-upload"),
]
