"""What /client/v4/openapi.json adds to FastAPI's generated document: the rules the server
enforces and every status it can answer.

Path parameters are checked by ``stepstone.validation`` (so that a bad name gets its own error
code, 10201 or 10401, rather than FastAPI's 10002), and so are some bodies and queries; FastAPI
cannot see those checks, so they are declared here, from the same constants. Every answer that
is not a success is the error envelope; FastAPI's 422 is never sent (validation is a 400).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute, Match, Route

from stepstone.model.statuses import ALL_STATUSES
from stepstone.ops import MAX_BATCH
from stepstone.validation import (
    ADDRESSABLE_ID_RE,
    MAX_ADDRESSABLE_ID,
    MAX_EVENT_TYPE,
    MAX_INSTANCE_ID,
    MAX_WORKFLOW_NAME,
    NAME_RE,
)

_NAME = NAME_RE.pattern
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "workflow_name": {"minLength": 1, "maxLength": MAX_WORKFLOW_NAME, "pattern": _NAME},
    "instance_id": {
        "minLength": 1,
        "maxLength": MAX_ADDRESSABLE_ID,
        "pattern": ADDRESSABLE_ID_RE.pattern,
    },
    "event_type": {"minLength": 1, "maxLength": MAX_EVENT_TYPE, "pattern": _NAME},
    "account_id": {"minLength": 1},
    "version_id": {"minLength": 1},
}
# A new instance's id: the create rule (stricter than the lookup rule above). Ids of the form
# cf_<64 hex> are reserved too; JSON Schema's pattern cannot say "not" without a lookahead.
INSTANCE_ID = {"type": "string", "minLength": 1, "maxLength": MAX_INSTANCE_ID, "pattern": _NAME}
QUERY_PARAMETERS: dict[tuple[str, str], dict[str, Any]] = {
    ("/instances", "status"): {"type": "string", "enum": list(ALL_STATUSES)},
    ("/instances", "date_start"): {"type": "string", "format": "date-time"},
    ("/instances", "date_end"): {"type": "string", "format": "date-time"},
    ("/stepstone/audit", "since"): {"type": "string", "format": "date-time"},
    ("/stepstone/audit", "until"): {"type": "string", "format": "date-time"},
}
BATCH_BODIES = ("/instances/batch", "/instances/batch/terminate")
ERRORS: dict[str, str] = {
    "400": "invalid request: validation, malformed JSON, a bad name or id",
    "401": "no credentials, or a token that is unknown or revoked",
    "403": "the token lacks the permission or is not valid for the account",
    "404": "no such route, workflow, instance, version or step",
    "409": "the instance's state does not allow it (x-should-retry: false)",
    "413": "the request body is over 1 MiB",
    "429": "too many wrong tokens from this address; see Retry-After",
    "500": "an unexpected error; see the server log",
    "503": "the store is unreachable; retry after Retry-After",
    "507": "the store is full",
}
RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}
}


def _filter_rule() -> dict[str, Any]:
    """Subscribe's ``filter``: comma-separated known event types, blanks between commas
    ignored. Imported here: the subscribe routes import the app module, which imports this."""
    from stepstone.web.common.sse import EVENT_TYPES

    one = r"\s*(" + "|".join(sorted(EVENT_TYPES)) + r")?\s*"
    return {"type": "string", "pattern": f"^{one}(,{one})*$"}


def refine(schema: dict[str, Any], open_paths: frozenset[str]) -> dict[str, Any]:
    QUERY_PARAMETERS.setdefault(("/subscribe", "filter"), _filter_rule())
    envelope = {"$ref": "#/components/schemas/Envelope_NoneType_"}
    if "Envelope_NoneType_" not in schema.get("components", {}).get("schemas", {}):
        envelope = {"type": "object"}
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or method == "parameters":
                continue
            if path in open_paths:
                operation["security"] = []
            _parameters(path, operation)
            _bodies(path, method, operation)
            _responses(operation, envelope, open_path=path in open_paths)
    components = schema.get("components", {}).get("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    return schema


def _parameters(path: str, operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        name = parameter.get("name")
        if parameter.get("in") == "path" and name in PATH_PARAMETERS:
            parameter["schema"] = {"type": "string", **PATH_PARAMETERS[name]}
        elif parameter.get("in") == "query":
            for (suffix, query_name), rule in QUERY_PARAMETERS.items():
                if name == query_name and path.endswith(suffix):
                    parameter["schema"] = dict(rule)


def _bodies(path: str, method: str, operation: dict[str, Any]) -> None:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    body = content.get("schema")
    if body is None:
        return
    if method == "post" and any(path.endswith(suffix) for suffix in BATCH_BODIES):
        body.update({"minItems": 1, "maxItems": MAX_BATCH})


def _responses(operation: dict[str, Any], envelope: dict[str, Any], *, open_path: bool) -> None:
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    responses.pop("4XX", None)
    for code, description in ERRORS.items():
        if code in responses or (open_path and code < "500"):
            continue
        answer: dict[str, Any] = {
            "description": description,
            "content": {"application/json": {"schema": envelope}},
        }
        if code == "429":
            answer["headers"] = {
                name: {**header, "required": True} for name, header in RETRY_AFTER.items()
            }
        elif code == "503":
            answer["headers"] = dict(RETRY_AFTER)
        responses[code] = answer


def allowed_methods(routes: Iterable[BaseRoute], path: str) -> list[str]:
    """The methods some route answers at ``path``, for a 405's ``Allow`` (HEAD with GET)."""
    scope = {"type": "http", "path": path, "method": "GET"}
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                methods |= route.methods
    return sorted(methods)
