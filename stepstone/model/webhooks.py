"""What the store keeps for webhooks: hooks, deliveries (the outbox) and their attempts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Transitions a hook can ask for. "rolledBack" is an end reached from rollingBack;
# "waitingForEvent" fires once per wait that lasts longer than the hook's threshold.
EVENTS = ("errored", "complete", "terminated", "paused", "rolledBack", "waitingForEvent")
WAITING = "waitingForEvent"

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
STATES = (PENDING, DELIVERED, FAILED)

SOURCE_API = "api"
SOURCE_CONFIG = "config"


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    id: str
    url: str
    events: tuple[str, ...]
    secret: str
    wait_threshold_ms: int | None = None
    source: str = SOURCE_API
    created_on: int = 0


def events_column(events: tuple[str, ...]) -> str:
    """',errored,complete,': one LIKE finds a transition in either dialect's trigger."""
    return "," + ",".join(events) + ","


def events_of(column: str) -> tuple[str, ...]:
    return tuple(e for e in column.split(",") if e)


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """A leased delivery, with what its body and signature need."""

    pk: int
    hook_id: str
    url: str
    secret: str
    workflow_name: str
    instance_id: str
    event: str
    error: bytes | None
    at: int
    attempts: int


@dataclass(frozen=True, slots=True)
class AttemptLog:
    started_on: int
    duration_ms: int
    status_code: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    pk: int
    hook_id: str
    url: str
    instance_id: str
    event: str
    at: int
    state: str
    attempts: int
    # Pending: when it is due. Delivered or failed: when it finished (what pruning goes by).
    next_attempt_at: int
    last_error: str | None
    delivered_on: int | None
    log: tuple[AttemptLog, ...] = ()


def delivery_record(row: Sequence[Any], log: tuple[AttemptLog, ...]) -> DeliveryRecord:
    """From the columns pk, hook id, url, instance id, event, at, state, attempts,
    next_attempt_at, last_error, delivered_on."""
    return DeliveryRecord(
        int(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        str(row[4]),
        int(row[5]),
        str(row[6]),
        int(row[7]),
        int(row[8]),
        row[9],
        row[10],
        log,
    )
