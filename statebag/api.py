"""HTTP API of the state bag: submit a state for dehydration, poll the job."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from analemma_sdk.statebag import InvalidKeyError

from .models import DehydrationJob
from .services.jobs import job_submit


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _denied(request: HttpRequest, permission: str) -> JsonResponse | None:
    if not request.user.is_authenticated:
        return _error(401, "authentication required")
    if not request.user.has_perm(permission):
        return _error(403, f"missing permission {permission}")
    return None


def _job_json(request: HttpRequest, job: DehydrationJob) -> dict[str, Any]:
    return {
        "id": str(job.pk),
        "url": request.build_absolute_uri(reverse("statebag-job", args=[job.pk])),
        "status": job.status,
        "owner_id": job.owner_id,
        "workflow_id": job.workflow_id,
        "execution_id": job.execution_id,
        "attempts": job.attempts,
        "manifest": {"hash": job.manifest.hash, "version": job.manifest.version} if job.manifest else None,
        "payload": job.payload,
        "error": job.error or None,
    }


@require_POST
def job_create(request: HttpRequest) -> JsonResponse:
    if (denied := _denied(request, "statebag.add_dehydrationjob")) is not None:
        return denied
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body must be JSON")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    missing = [name for name in ("owner_id", "workflow_id", "execution_id", "state") if name not in body]
    if missing:
        return _error(400, f"missing fields: {', '.join(missing)}")
    parent = body.get("parent") or ""
    if not isinstance(parent, str):
        return _error(400, "parent must be a manifest hash")
    try:
        job = job_submit(
            owner_id=body["owner_id"],
            workflow_id=body["workflow_id"],
            execution_id=body["execution_id"],
            state=body["state"],
            parent=parent,
            submitted_by=request.user.get_username(),
        )
    except (InvalidKeyError, ValueError) as exc:
        return _error(400, str(exc))
    response = JsonResponse(_job_json(request, job), status=202)
    response["Location"] = _job_json(request, job)["url"]
    return response


@require_GET
def job_detail(request: HttpRequest, job_id: str) -> JsonResponse:
    if (denied := _denied(request, "statebag.view_dehydrationjob")) is not None:
        return denied
    job = get_object_or_404(DehydrationJob.objects.select_related("manifest"), pk=job_id)
    return JsonResponse(_job_json(request, job))
