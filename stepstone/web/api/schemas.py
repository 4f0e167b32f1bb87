"""Request bodies as the clients send them; FastAPI validates them and documents them in
/client/v4/openapi.json. Unknown fields are ignored, as Cloudflare ignores them. Numbers and
booleans are strict: ``"yes"`` is not true and ``"5"`` is not 5, as JSON types are meant."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
)

from stepstone.authoring.durations import InvalidDurationError, parse_duration
from stepstone.validation import MAX_INSTANCE_ID, NAME_RE


def _whole(value: object) -> object:
    """JSON has one number type: 5.0 is the integer 5 (as JSON Schema says), 5.5 is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer as JSON means it: not a string of digits, not a boolean.
JsonInt = Annotated[StrictInt, BeforeValidator(_whole)]
# Ten thousand years: far past any plan's limit, and an expiry (now + retention) still fits
# the 64-bit integers every store keeps times in.
MAX_RETENTION_MS = 10_000 * 365 * 86_400_000
_UNITS = ("ms", "millisecond", "second", "minute", "hour", "day", "week", "month", "year", "m")


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" for c in word)


# What stepstone.authoring.durations reads, as a JSON Schema pattern: a number of at least 1
# (four digits at most, so every match is within MAX_RETENTION_MS), then a unit in any case
# with an optional lower-case plural s; with no unit it is milliseconds.
DURATION_PATTERN = (
    r"^\s*0*[1-9][0-9]{0,3}(\.[0-9]+)?\s*((" + "|".join(_any_case(u) for u in _UNITS) + r")s?)?\s*$"
)
_RETENTION: dict[str, Any] = {
    "minimum": 1,
    "maximum": MAX_RETENTION_MS,
    "pattern": DURATION_PATTERN,
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Retention(_Body):
    success_retention: JsonInt | str | None = Field(
        None,
        description="milliseconds, or a duration such as '1 day'",
        json_schema_extra=_RETENTION,
    )
    error_retention: JsonInt | str | None = Field(
        None,
        description="milliseconds, or a duration such as '7 days'",
        json_schema_extra=_RETENTION,
    )

    @field_validator("success_retention", "error_retention")
    @classmethod
    def _bounded(cls, value: int | str | None) -> int | str | None:
        """Past the bound an expiry would overflow the store; a value that is no duration at
        all is left to ``ops.retention_ms``, which names what is wrong with it."""
        try:
            ms = parse_duration(value) if value is not None else 0
        except InvalidDurationError:
            return value
        if ms > MAX_RETENTION_MS:
            raise ValueError(f"a retention is at most {MAX_RETENTION_MS} ms (10,000 years)")
        return value


class Limits(_Body):
    steps: JsonInt | None = Field(None, ge=1, le=25_000)


class Schedule(_Body):
    cron: str = Field(min_length=1, max_length=256)


class Concurrency(_Body):
    limit: JsonInt | None = Field(
        None,
        ge=1,
        le=2**31 - 1,
        description="at most this many instances run at once; the rest wait queued",
    )


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
    concurrency: Concurrency | None = None
    jurisdiction: Literal["eu", "fedramp", "us"] | None = Field(
        None, description="stored and returned; cannot change once set (10209)"
    )


class InstanceCreate(_Body):
    instance_id: str | None = Field(
        None,
        description="1-100 chars; a UUID when omitted; cf_<64 hex> is reserved",
        json_schema_extra={
            "minLength": 1,
            "maxLength": MAX_INSTANCE_ID,
            "pattern": NAME_RE.pattern,
        },
    )
    params: Any = Field(
        None, description="the event payload: a JSON-encoded string or any JSON value"
    )
    instance_retention: Retention | None = None
    location_hint: str | None = Field(None, description="accepted and ignored")


class BatchItem(InstanceCreate):
    """An entry of createBatch's object form: the REST fields, or the binding's names."""

    id: str | None = Field(None, description="the binding's name for instance_id")
    retention: Retention | None = Field(None, description="the binding's instance_retention")


class BatchCount(_Body):
    """createBatch's object form ``{count, params?, retention?}``: count new ids, shared
    options. Other fields are refused, so a body cannot mean two forms at once."""

    model_config = ConfigDict(extra="forbid")

    count: JsonInt = Field(ge=1, le=100, description="instances, each with a new id")
    params: Any = Field(None, description="every instance's payload")
    retention: Retention | None = Field(None, description="every instance's retention")
    instance_retention: Retention | None = Field(None, description="alias of retention")
    location_hint: str | None = Field(None, description="accepted and ignored")


class BatchInstances(_Body):
    """createBatch's object form ``{instances: [...]}``, each entry reported on its own."""

    model_config = ConfigDict(extra="forbid")

    instances: list[BatchItem] = Field(min_length=1, max_length=100)


class RestartFrom(_Body):
    name: str = Field(min_length=1, max_length=256, description="step name without -N suffix")
    count: JsonInt = Field(1, ge=1)
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
