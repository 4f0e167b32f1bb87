"""What operations check in their input: identifiers, payloads, retentions, schedules, limits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stepstone.authoring.durations import InvalidDurationError, parse_duration
from stepstone.errors import (
    InvalidParams,
    InvalidRequest,
    InvalidWorkflowDefinition,
    InvalidWorkflowName,
    StepstoneError,
)
from stepstone.validation import (
    workflow_name_problem,
)

MAX_PAYLOAD_BYTES = 1 << 20
MAX_STEPS_LIMIT = 25_000
# Cloudflare sets no maximum for concurrency.limit; this keeps it a 32-bit integer.
MAX_CONCURRENCY_LIMIT = 2**31 - 1
MAX_BATCH = 100
MAX_SCHEDULES = 100
# Ids the object form of createBatch refuses besides cf_<64 hex>: they name REST routes
# (.../instances/batch, .../instances/terminate), so such an instance could not be addressed.
RESERVED_BATCH_IDS = frozenset({"batch", "terminate", "terminateAll"})


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """One instance to create; ``params`` is the payload already encoded as JSON."""

    id: str | None = None
    params: bytes = b"null"
    success_retention_ms: int | None = None
    error_retention_ms: int | None = None
    schedule: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class BatchError:
    """Why entry ``index`` of a createBatch object form was not created."""

    index: int
    id: str | None
    code: int
    message: str

    @classmethod
    def of(cls, index: int, instance_id: str | None, error: StepstoneError) -> BatchError:
        return cls(index, instance_id, error.code, error.message)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "code": self.code, "message": self.message}


def encode_payload(value: Any) -> bytes:
    """Encode a payload given as a Python value, within the 1 MiB limit."""
    try:
        data = orjson.dumps(value)
    except TypeError as exc:
        raise InvalidParams(f"the payload is not JSON-serialisable: {exc}") from None
    check_payload_size(data)
    return data


def check_payload_size(data: bytes) -> None:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise InvalidParams(f"the payload is {len(data)} bytes; the limit is 1 MiB")


def retention_ms(value: Any, what: str) -> int | None:
    if value is None:
        return None
    try:
        ms = parse_duration(value)
    except InvalidDurationError as exc:
        raise InvalidRequest(f"{what}: {exc}") from None
    if ms <= 0:
        raise InvalidRequest(f"{what} must be greater than 0")
    return ms


def validate_schedules(schedules: Sequence[str]) -> tuple[str, ...]:
    # Imported here: the cron module creates instances through this one.
    from stepstone.cron import InvalidCronError, validate

    if len(schedules) > MAX_SCHEDULES:
        raise InvalidWorkflowDefinition(f"at most {MAX_SCHEDULES} schedules")
    for cron in schedules:
        try:
            validate(cron)
        except InvalidCronError as exc:
            raise InvalidWorkflowDefinition(str(exc)) from None
    return tuple(schedules)


def check_workflow_name(name: str) -> None:
    problem = workflow_name_problem(name)
    if problem:
        raise InvalidWorkflowName(f"invalid workflow name {name!r}: {problem}")
