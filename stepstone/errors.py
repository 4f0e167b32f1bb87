"""Errors of Stepstone.

Two families live here. Workflow errors are what user code raises or catches inside ``run()``
(``NonRetryableError``, ``WorkflowTimeoutError``). API errors carry the stable numeric code and the
``workflows.api.error.<key>`` message of Cloudflare's v4 API, plus the HTTP status, so every
front-end reports the same failure the same way.
"""

from __future__ import annotations


class NonRetryableError(Exception):
    """Raise inside a step to fail it at once, without further retries."""

    def __init__(self, message: str = "", name: str = "NonRetryableError") -> None:
        super().__init__(message)
        self.name = name


class WorkflowTimeoutError(Exception):
    """A step attempt or a ``wait_for_event`` ran out of time. Catchable in ``run()``."""


class WorkflowFatalError(Exception):
    """A misuse the engine cannot retry: bad step config, non-serialisable output, limits."""


class NondeterminismError(WorkflowFatalError):
    """Replay met code that no longer matches the recorded history."""


class StepError(Exception):
    """A recorded step error of a type Stepstone does not re-create; ``name`` keeps the original."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class StepstoneError(Exception):
    """An error that the API, CLI and embedding API report with a stable code."""

    code = 10001
    key = "internal_server"
    http_status = 500

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.message)
        self.detail = detail

    @property
    def message(self) -> str:
        return f"workflows.api.error.{self.key}"


def _api_error(name: str, code: int, key: str, status: int) -> type[StepstoneError]:
    return type(name, (StepstoneError,), {"code": code, "key": key, "http_status": status})


# Codes Cloudflare documents are kept; the rest are Stepstone's, stable and listed in
# docs/compatibility.md.
InternalError = _api_error("InternalError", 10001, "internal_server", 500)
InvalidRequest = _api_error("InvalidRequest", 10002, "invalid_request", 400)
Unauthorized = _api_error("Unauthorized", 10003, "unauthorized", 401)
Forbidden = _api_error("Forbidden", 10004, "forbidden", 403)
PayloadTooLarge = _api_error("PayloadTooLarge", 10005, "payload_too_large", 413)
RouteNotFound = _api_error("RouteNotFound", 10006, "route_not_found", 404)
# The store is unreachable (its database down) or full (its disk): retry after Retry-After.
StorageUnavailable = _api_error("StorageUnavailable", 10007, "storage_unavailable", 503)
# Too many wrong tokens from one client address: retry after Retry-After.
TooManyRequests = _api_error("TooManyRequests", 10009, "too_many_requests", 429)
StorageFull = _api_error("StorageFull", 10008, "storage_full", 507)
WorkflowNotFound = _api_error("WorkflowNotFound", 10200, "workflow.not_found", 404)
InvalidWorkflowName = _api_error("InvalidWorkflowName", 10201, "workflow.invalid_name", 400)
InvalidWorkflowDefinition = _api_error(
    "InvalidWorkflowDefinition", 10202, "workflow.invalid_definition", 400
)
VersionNotFound = _api_error("VersionNotFound", 10300, "version.not_found", 404)
InstanceNotFound = _api_error("InstanceNotFound", 10400, "instance.not_found", 404)
InvalidInstanceId = _api_error("InvalidInstanceId", 10401, "instance.invalid_id", 400)
StepNotFound = _api_error("StepNotFound", 10402, "instance.step_not_found", 404)
InvalidEventType = _api_error("InvalidEventType", 10403, "workflow.invalid_event_type", 400)
InstanceAlreadyExists = _api_error("InstanceAlreadyExists", 10405, "instance.already_exists", 409)
CannotTerminate = _api_error("CannotTerminate", 10406, "instance.cannot_terminate", 409)
CannotRestart = _api_error("CannotRestart", 10407, "instance.cannot_restart", 400)
InvalidAction = _api_error("InvalidAction", 10408, "instance.invalid_action", 409)
CannotSendEvent = _api_error("CannotSendEvent", 10409, "instance.cannot_send_event", 409)
InvalidParams = _api_error("InvalidParams", 10410, "instance.invalid_params", 400)
# Cloudflare's 2026 codes: 10209 (wrangler 4.164's WORKFLOW_JURISDICTION_IMMUTABLE_CODE) and
# 10415 (createBatch's object form); 10411 is Stepstone's number for miniflare's
# instance.step_output_corrupt, whose numeric code Cloudflare does not publish.
JurisdictionImmutable = _api_error(
    "JurisdictionImmutable", 10209, "workflow.jurisdiction_immutable", 409
)
StepOutputCorrupt = _api_error("StepOutputCorrupt", 10411, "instance.step_output_corrupt", 500)
DuplicateInBatch = _api_error("DuplicateInBatch", 10415, "instance.duplicate_in_batch", 409)
# Stepstone extensions (operator tools): codes Cloudflare does not use.
BulkJobNotFound = _api_error("BulkJobNotFound", 10900, "bulk_job.not_found", 404)
