"""The OpenAPI 3.1 description of the HTTP API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_FLAG = {
    "type": "object",
    "properties": {
        "kind": {"enum": ["boolean", "string", "number", "json"]},
        "default": {},
        "enabled": {"type": "boolean"},
        "value": {},
        "percentage": {"type": "number", "minimum": 0, "maximum": 100},
        "variants": {
            "type": "array",
            "items": {"type": "object", "properties": {"value": {}, "weight": {"type": "integer"}}},
        },
        "targets": {"type": "array", "items": {"type": "object"}},
        "rules": {"type": "array", "items": {"type": "object"}},
        "bucket_by": {"type": "string"},
        "salt": {"type": "string"},
        "seed": {"type": ["integer", "null"]},
    },
}
_JOB = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "url": {"type": "string", "format": "uri"},
        "status": {"enum": ["queued", "running", "succeeded", "failed"]},
        "owner_id": {"type": "string"},
        "workflow_id": {"type": "string"},
        "execution_id": {"type": "string"},
        "attempts": {"type": "integer"},
        "manifest": {
            "type": ["object", "null"],
            "properties": {"hash": {"type": "string"}, "version": {"type": "integer"}},
        },
        "payload": {"type": ["object", "null"]},
        "error": {"type": ["string", "null"]},
    },
}


def schema() -> dict[str, Any]:
    json_error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Analemma StateBag & Rollout API", "version": "1"},
        "components": {
            "securitySchemes": {
                "sdkKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Read-only SDK key of one environment.",
                },
                "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
            },
            "schemas": {
                "Error": _ERROR,
                "Flag": _FLAG,
                "FlagSet": {
                    "type": "object",
                    "properties": {
                        "format": {"type": "integer"},
                        "environment": {"type": "string"},
                        "revision": {"type": "integer"},
                        "flags": {
                            "type": "object",
                            "additionalProperties": {"$ref": "#/components/schemas/Flag"},
                        },
                    },
                    "required": ["format", "environment", "revision", "flags"],
                },
                "Job": _JOB,
                "JobRequest": {
                    "type": "object",
                    "properties": {
                        "owner_id": {"type": "string"},
                        "workflow_id": {"type": "string"},
                        "execution_id": {"type": "string"},
                        "state": {"type": "object"},
                        "parent": {"type": "string", "description": "Manifest hash the new version follows."},
                    },
                    "required": ["owner_id", "workflow_id", "execution_id", "state"],
                },
            },
        },
        "paths": {
            "/api/v1/flagset": {
                "get": {
                    "summary": "The current revision of the key's environment",
                    "security": [{"sdkKey": []}],
                    "parameters": [{"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}],
                    "responses": {
                        "200": {
                            "description": "The flag set; strong ETag, Cache-Control: private, no-cache.",
                            "headers": {"ETag": {"schema": {"type": "string"}}},
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/FlagSet"}}
                            },
                        },
                        "304": {"description": "Unchanged since the ETag given in If-None-Match."},
                        "401": {"description": "Missing, unknown or revoked key.", "content": json_error},
                    },
                }
            },
            "/api/v1/statebag/jobs": {
                "post": {
                    "summary": "Submit a state to dehydrate into the execution's next version",
                    "security": [{"session": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Accepted; poll the job URL (also in Location).",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
                        },
                        "400": {"description": "Malformed request.", "content": json_error},
                        "401": {"description": "Not authenticated.", "content": json_error},
                        "403": {"description": "Missing permission.", "content": json_error},
                    },
                }
            },
            "/api/v1/statebag/jobs/{job_id}": {
                "get": {
                    "summary": "A dehydration job's status, manifest and payload",
                    "security": [{"session": []}],
                    "parameters": [
                        {
                            "name": "job_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "format": "uuid"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The job.",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
                        },
                        "401": {"description": "Not authenticated.", "content": json_error},
                        "404": {"description": "No such job."},
                    },
                }
            },
        },
    }


def openapi_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(schema())
