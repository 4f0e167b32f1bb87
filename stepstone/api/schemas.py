"""Request bodies as the clients send them; FastAPI validates them and documents them in
/client/v4/openapi.json. Unknown fields are ignored, as Cloudflare ignores them. Numbers and
booleans are strict: ``"yes"`` is not true and ``"5"`` is not 5, as JSON types are meant."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Retention(_Body):
    success_retention: StrictInt | str | None = Field(
        None, description="milliseconds, or a duration such as '1 day'"
    )
    error_retention: StrictInt | str | None = Field(
        None, description="milliseconds, or a duration such as '7 days'"
    )


class Limits(_Body):
    steps: StrictInt | None = Field(None, ge=1, le=25_000)


class Schedule(_Body):
    cron: str = Field(min_length=1, max_length=256)


class Concurrency(_Body):
    limit: StrictInt | None = None


class WorkflowPut(_Body):
    class_name: str = Field(
        min_length=1, max_length=255, description="the WorkflowEntrypoint class"
    )
    script_name: str = Field(
        min_length=1, max_length=255, description="the importable Python module holding it"
    )
    limits: Limits | None = None
    schedules: list[Schedule] | None = None
    default_retention: Retention | None = None
    concurrency: Concurrency | None = Field(None, description="accepted and ignored")


class InstanceCreate(_Body):
    instance_id: str | None = Field(None, description="1-100 chars; a UUID when omitted")
    params: Any = Field(
        None, description="the event payload: a JSON-encoded string or any JSON value"
    )
    instance_retention: Retention | None = None
    location_hint: str | None = Field(None, description="accepted and ignored")


class RestartFrom(_Body):
    name: str = Field(min_length=1, max_length=256, description="step name without -N suffix")
    count: StrictInt = Field(1, ge=1)
    type: Literal["do", "sleep", "waitForEvent"] = "do"


class StatusChange(_Body):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: Literal["pause", "resume", "terminate", "restart"]
    rollback: StrictBool | None = Field(None, description="terminate only: run rollback handlers")
    from_: RestartFrom | None = Field(None, alias="from", description="restart only")


class BatchDelete(_Body):
    instances: list[str] = Field(min_length=1, max_length=100)


class SettingsPatch(_Body):
    default_retention: Retention
