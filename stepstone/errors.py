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


# Codes Cloudflare documents are kept; the rest are Stepstone's, stable and listed in
# docs/compatibility.md.
class InternalError(StepstoneError):
    code, key, http_status = 10001, "internal_server", 500


class InvalidRequest(StepstoneError):
    code, key, http_status = 10002, "invalid_request", 400


class Unauthorized(StepstoneError):
    code, key, http_status = 10003, "unauthorized", 401


class Forbidden(StepstoneError):
    code, key, http_status = 10004, "forbidden", 403


class PayloadTooLarge(StepstoneError):
    code, key, http_status = 10005, "payload_too_large", 413


class RouteNotFound(StepstoneError):
    code, key, http_status = 10006, "route_not_found", 404


# The store is unreachable (its database down) or full (its disk): retry after Retry-After.
class StorageUnavailable(StepstoneError):
    code, key, http_status = 10007, "storage_unavailable", 503


# Too many wrong tokens from one client address: retry after Retry-After.
class TooManyRequests(StepstoneError):
    code, key, http_status = 10009, "too_many_requests", 429


class StorageFull(StepstoneError):
    code, key, http_status = 10008, "storage_full", 507


class WorkflowNotFound(StepstoneError):
    code, key, http_status = 10200, "workflow.not_found", 404


class InvalidWorkflowName(StepstoneError):
    code, key, http_status = 10201, "workflow.invalid_name", 400


class InvalidWorkflowDefinition(StepstoneError):
    code, key, http_status = 10202, "workflow.invalid_definition", 400


class VersionNotFound(StepstoneError):
    code, key, http_status = 10300, "version.not_found", 404


class InstanceNotFound(StepstoneError):
    code, key, http_status = 10400, "instance.not_found", 404


class InvalidInstanceId(StepstoneError):
    code, key, http_status = 10401, "instance.invalid_id", 400


class StepNotFound(StepstoneError):
    code, key, http_status = 10402, "instance.step_not_found", 404


class InvalidEventType(StepstoneError):
    code, key, http_status = 10403, "workflow.invalid_event_type", 400


class InstanceAlreadyExists(StepstoneError):
    code, key, http_status = 10405, "instance.already_exists", 409


class CannotTerminate(StepstoneError):
    code, key, http_status = 10406, "instance.cannot_terminate", 409


class CannotRestart(StepstoneError):
    code, key, http_status = 10407, "instance.cannot_restart", 400


class InvalidAction(StepstoneError):
    code, key, http_status = 10408, "instance.invalid_action", 409


class CannotSendEvent(StepstoneError):
    code, key, http_status = 10409, "instance.cannot_send_event", 409


class InvalidParams(StepstoneError):
    code, key, http_status = 10410, "instance.invalid_params", 400


# Cloudflare's 2026 codes: 10209 (wrangler 4.164's WORKFLOW_JURISDICTION_IMMUTABLE_CODE) and
# 10415 (createBatch's object form); 10411 is Stepstone's number for miniflare's
# instance.step_output_corrupt, whose numeric code Cloudflare does not publish.
class JurisdictionImmutable(StepstoneError):
    code, key, http_status = 10209, "workflow.jurisdiction_immutable", 409


class StepOutputCorrupt(StepstoneError):
    code, key, http_status = 10411, "instance.step_output_corrupt", 500


class DuplicateInBatch(StepstoneError):
    code, key, http_status = 10415, "instance.duplicate_in_batch", 409


# Stepstone extensions (operator tools): codes Cloudflare does not use.
class BulkJobNotFound(StepstoneError):
    code, key, http_status = 10900, "bulk_job.not_found", 404
