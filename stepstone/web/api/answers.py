"""The answers' shapes, for /client/v4/openapi.json only.

Handlers render with ``stepstone.views`` and return the response directly, so these models
document the wire without re-validating every answer; tests/api checks the two agree by
validating live answers against them.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")
Status = Literal[
    "queued",
    "running",
    "paused",
    "errored",
    "terminated",
    "complete",
    "waitingForPause",
    "waiting",
    "rollingBack",
]


class Message(BaseModel):
    code: int
    message: str


class ResultInfo(BaseModel):
    count: int
    per_page: int
    total_count: int
    page: int | None = None
    total_pages: int | None = None
    cursor: str | None = Field(None, description="instances only: present while more remain")


class Envelope(BaseModel, Generic[T]):
    success: bool
    errors: list[Message]
    messages: list[Message]
    result: T | None
    result_info: ResultInfo | None = None


class ErrorInfo(BaseModel):
    name: str
    message: str


class ScheduleOut(BaseModel):
    cron: str
    next_instance: str | None


class _WorkflowFields(BaseModel):
    id: str
    name: str
    class_name: str
    script_name: str
    created_on: str
    modified_on: str
    triggered_on: str | None


class WorkflowOut(_WorkflowFields):
    instances: dict[str, int]
    schedules: list[ScheduleOut]


class WorkflowPutOut(_WorkflowFields):
    version_id: str
    is_deleted: int
    terminator_running: int


class WorkflowDeleted(BaseModel):
    status: Literal["ok"]
    success: bool


class VersionOut(BaseModel):
    id: str
    workflow_id: str
    class_name: str
    script_name: str
    created_on: str
    modified_on: str
    has_dag: bool
    language: Literal["javascript", "python"]
    limits: dict[str, int]
    default_retention: dict[str, int | None] | None = None


class VersionGraphOut(BaseModel):
    id: str
    workflow_id: str
    class_name: str
    script_name: str
    created_on: str
    modified_on: str
    graph: None


class InstanceCreatedOut(BaseModel):
    id: str
    status: Status
    version_id: str
    workflow_id: str
    trigger_source: Literal["unknown", "api", "binding", "event", "cron"]


class InstanceOut(InstanceCreatedOut):
    created_on: str
    modified_on: str
    started_on: str | None
    ended_on: str | None


class DetailsOut(BaseModel):
    status: Status
    params: Any
    trigger: dict[str, str]
    versionId: str
    queued: str
    start: str | None
    end: str | None
    success: bool | None
    error: ErrorInfo | None
    output: str | int | float = Field(description="non-strings other than numbers as JSON text")
    step_count: int
    steps: list[dict[str, Any]] = Field(
        description="type step|rollback|sleep|waitForEvent|termination entries"
    )
    rollback: dict[str, Any] | None
    schedule: dict[str, Any] | None = None


class StepOut(BaseModel):
    status: Status
    error: ErrorInfo | None
    output: Any = Field(description="the full value; '[REDACTED]' for sensitive steps")
    event_type: str | None = Field(None, description="type=waitForEvent only")


class StatusOut(BaseModel):
    status: Status
    timestamp: str


class InstanceStamp(BaseModel):
    instanceId: str
    timestamp: str


class DeletedId(BaseModel):
    id: str


class DeleteError(BaseModel):
    id: str
    code: int
    message: str


class BatchDeleteOut(BaseModel):
    deleted: list[DeletedId]
    errors: list[DeleteError]


class BatchTerminateOut(BaseModel):
    instancesTerminated: int
    status: Literal["ok", "already_running"]


class JobStarted(BaseModel):
    status: Literal["ok", "already_running"]


class JobState(BaseModel):
    status: Literal["running", "not_running"]


class RetentionOut(BaseModel):
    success_retention: int
    error_retention: int


class SettingsOut(BaseModel):
    default_retention: RetentionOut


class AccountOut(BaseModel):
    id: str
    name: str
    type: str


class MembershipOut(BaseModel):
    id: str
    status: str
    account: dict[str, str]


class Health(BaseModel):
    status: Literal["ok"]


def doc(model: Any) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route answering ``Envelope[model]``, errors enveloped too."""
    return {
        200: {"model": Envelope[model]},
        "4XX": {"model": Envelope[None], "description": "error envelope"},
    }
