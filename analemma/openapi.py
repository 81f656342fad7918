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
_FRAME = {
    "type": "object",
    "properties": {
        "digest": {"type": "string"},
        "offset": {"type": "integer"},
        "length": {"type": "integer"},
        "codec": {"type": "string"},
        "raw_size": {"type": "integer"},
        "dict_id": {"type": ["string", "null"]},
    },
    "required": ["digest", "offset", "length", "codec", "raw_size"],
}
_PREPARE = {
    "type": "object",
    "properties": {
        "owner_id": {"type": "string", "description": "Must be the write key's owner."},
        "workflow_id": {"type": "string"},
        "execution_id": {"type": "string"},
        "parents": {"type": "array", "items": {"type": "string"}},
        "packs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "key": {"type": "string", "description": "Under o/<owner_id>/."},
                    "digest": {"type": "string", "description": "sha256 of the object's bytes."},
                    "size": {"type": "integer"},
                    "kind": {"enum": ["pack", "object"]},
                    "frames": {"type": "array", "items": _FRAME},
                },
                "required": ["key", "digest", "size", "frames"],
            },
        },
        "reused": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
        "idempotency_key": {"type": ["string", "null"]},
        "upload": {"enum": ["direct", "presigned"]},
    },
    "required": ["owner_id", "workflow_id", "execution_id"],
}
_RECORD = {
    "type": "object",
    "properties": {
        "hash": {"type": "string"},
        "version": {"type": "integer"},
        "entries": {"type": ["object", "null"], "description": "Set when an earlier commit is replayed."},
    },
}


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _write_key_call(
    summary: str, ok: dict[str, Any], body: str | None = None, *params: str
) -> dict[str, Any]:
    json_error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    call: dict[str, Any] = {
        "summary": summary,
        "security": [{"writeKey": []}],
        "parameters": [_path_id(name) for name in params],
        "responses": {
            **ok,
            "400": {
                "description": "Malformed, or an object key outside the owner's prefix.",
                "content": json_error,
            },
            "401": {"description": "Missing, unknown or revoked write key.", "content": json_error},
            "403": {"description": "The key writes for another owner.", "content": json_error},
            "404": {"description": "Nothing of this owner's by that name.", "content": json_error},
            "409": {
                "description": "Conflict: the head moved (code conflict), a reused blob was collected "
                "(stale_reference, with digests) or uploads are missing or differ (upload_mismatch).",
                "content": json_error,
            },
            "410": {"description": "The transaction was aborted.", "content": json_error},
        },
    }
    if body:
        call["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    return call


def _record_response(status: str, description: str, schema_name: str) -> dict[str, Any]:
    return {
        status: {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
        }
    }


def remote_commit_paths() -> dict[str, Any]:
    return {
        "/api/v1/statebag/transactions": {
            "post": _write_key_call(
                "Prepare a commit: record what will be uploaded and pin what is reused",
                _record_response(
                    "201", "txn_id, expires_at; committed when replayed; uploads when presigned.", "Prepared"
                ),
                "PrepareRequest",
            )
        },
        "/api/v1/statebag/transactions/{txn_id}/commit": {
            "post": _write_key_call(
                "Commit, once every declared object is stored with its declared size and sha256",
                _record_response("200", "The new (or replayed) version.", "ManifestRecord"),
                "CommitRequest",
                "txn_id",
            )
        },
        "/api/v1/statebag/transactions/{txn_id}/abort": {
            "post": _write_key_call(
                "Abort a prepared commit", {"200": {"description": "Aborted."}}, None, "txn_id"
            )
        },
        "/api/v1/statebag/executions/{execution_id}/manifests/{version}": {
            "get": _write_key_call(
                "One of the owner's manifests (a version number, or head)",
                _record_response("200", "The manifest with its entries.", "ManifestRecord"),
                None,
                "execution_id",
                "version",
            )
        },
        "/api/v1/statebag/uploads/{token}": {
            "put": {
                "summary": "Upload an object prepare declared (for stores without presigned URLs)",
                "description": "The signed, expiring token in the URL is the credential, as a presigned URL's is.",
                "parameters": [_path_id("token")],
                "requestBody": {"required": True, "content": {"application/octet-stream": {}}},
                "responses": {
                    "201": {"description": "Stored."},
                    "400": {"description": "Not the bytes prepare declared."},
                    "403": {"description": "Invalid or expired token, or the transaction is over."},
                    "413": {"description": "Over the blob size limit."},
                },
            }
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
                "writeKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Write key of one owner, for statebag commits.",
                },
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
                "PrepareRequest": _PREPARE,
                "Prepared": {
                    "type": "object",
                    "properties": {
                        "txn_id": {"type": ["string", "null"]},
                        "expires_at": {"type": "number"},
                        "committed": {"$ref": "#/components/schemas/ManifestRecord"},
                        "uploads": {"type": "object", "additionalProperties": {"type": "object"}},
                    },
                },
                "CommitRequest": {
                    "type": "object",
                    "properties": {"entries": {"type": "object"}, "cohort": {"type": "object"}},
                    "required": ["entries"],
                },
                "ManifestRecord": _RECORD,
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
            **remote_commit_paths(),
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
