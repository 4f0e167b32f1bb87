"""Fold an instance's append-only event log into per-step records.

The same fold serves replay (what each step already did) and every observer (instance details,
the step endpoint), so what the engine acts on and what an operator reads cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from stepstone.model.events import ROLLBACK_PREFIX, TERMINAL_EVENTS, EventType
from stepstone.model.records import EventRecord

# Step kinds; "do" is shown as type "step" by the API, "rollback" as "rollback".
DO = "do"
SLEEP = "sleep"
WAIT = "waitForEvent"
ROLLBACK = "rollback"

INTERNAL_ATTEMPT_ERROR = {
    "name": "WorkflowInternalError",
    "message": "Attempt failed due to internal workflows error",
}


@dataclass(slots=True)
class AttemptRecord:
    attempt: int
    start: int
    end: int | None = None
    success: bool | None = None
    error: dict[str, Any] | None = None
    output: bytes | None = None
    retry_at: int | None = None
    # For people (logs, dashboard) only: the API shows an attempt's error as {name, message}.
    traceback: str | None = None


@dataclass(slots=True)
class StepRecord:
    kind: str
    name: str
    first_event_id: int
    start: int
    config: dict[str, Any] | None = None
    has_rollback: bool = False
    attempts: list[AttemptRecord] = field(default_factory=list)
    done: bool = False
    success: bool | None = None
    output: bytes | None = None
    stream: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    end: int | None = None
    wake_at: int | None = None
    event_type: str | None = None
    event: dict[str, Any] | None = None

    @property
    def sensitive(self) -> bool:
        return bool(self.config and self.config.get("sensitive") == "output")

    @property
    def dangling_attempt(self) -> AttemptRecord | None:
        """The last attempt if it started and never ended (its worker died)."""
        if self.done or not self.attempts or self.attempts[-1].end is not None:
            return None
        return self.attempts[-1]

    @property
    def retry_at(self) -> int | None:
        if self.done or not self.attempts or self.attempts[-1].success is not False:
            return None
        return self.attempts[-1].retry_at


@dataclass(slots=True)
class InstanceHistory:
    steps: dict[tuple[str, str], StepRecord] = field(default_factory=dict)
    queued_at: int | None = None
    started_at: int | None = None
    ended_at: int | None = None
    terminated_by: dict[str, Any] | None = None
    rollback_started: bool = False
    last_event_id: int = 0
    stream_bytes: int = 0

    def ordered(self) -> list[StepRecord]:
        return sorted(self.steps.values(), key=lambda s: s.first_event_id)


def _load(data: bytes | None) -> dict[str, Any]:
    if not data:
        return {}
    value = orjson.loads(data)
    return value if isinstance(value, dict) else {}


def fold(events: list[EventRecord]) -> InstanceHistory:
    """Build the history; later events of a step refine earlier ones, duplicates are harmless."""
    history = InstanceHistory()
    for event in events:
        history.last_event_id = event.event_id
        if event.step_kind is None or event.step_name is None:
            _fold_instance_event(history, event)
            continue
        key = (event.step_kind, event.step_name)
        step = history.steps.get(key)
        if step is None:
            step = StepRecord(event.step_kind, event.step_name, event.event_id, event.ts)
            history.steps[key] = step
        _fold_step_event(history, step, event)
    return history


def _fold_instance_event(history: InstanceHistory, event: EventRecord) -> None:
    kind = event.type
    if kind == EventType.WORKFLOW_QUEUED:
        history.queued_at = history.queued_at or event.ts
    elif kind == EventType.WORKFLOW_STARTED:
        history.started_at = history.started_at or event.ts
    elif kind in TERMINAL_EVENTS:
        history.ended_at = event.ts
        if kind == EventType.WORKFLOW_TERMINATED:
            history.terminated_by = _load(event.data).get("trigger") or {"source": "api"}
    elif kind == EventType.ROLLBACK_STARTED:
        history.rollback_started = True
    elif kind == EventType.WORKFLOW_RUNNING:
        paused_ms = int(_load(event.data).get("pausedMs") or 0)
        if paused_ms:
            # A resume shifts every timer that was pending while the instance was paused.
            for step in history.steps.values():
                if not step.done and step.wake_at is not None:
                    step.wake_at += paused_ms
                if step.retry_at is not None:
                    step.attempts[-1].retry_at = step.retry_at + paused_ms


def _fold_step_event(history: InstanceHistory, step: StepRecord, event: EventRecord) -> None:
    kind = event.type.removeprefix(ROLLBACK_PREFIX) if step.kind == ROLLBACK else event.type
    data = _load(event.data) if kind != EventType.STEP_COMPLETED else None
    if kind == EventType.STEP_STARTED:
        assert data is not None
        step.config = data.get("config")
        step.has_rollback = bool(data.get("hasRollback"))
        step.start = event.ts
    elif kind == EventType.ATTEMPT_STARTED:
        assert data is not None
        number = int(data["attempt"])
        if not step.attempts or step.attempts[-1].attempt != number:
            step.attempts.append(AttemptRecord(number, event.ts))
    elif kind in (EventType.ATTEMPT_COMPLETED, EventType.ATTEMPT_ERRORED):
        assert data is not None
        attempt = _attempt(step, int(data["attempt"]), event.ts)
        attempt.end = event.ts
        attempt.success = kind == EventType.ATTEMPT_COMPLETED
        if not attempt.success:
            attempt.error = data.get("error")
            attempt.retry_at = data.get("retryAt")
            attempt.traceback = data.get("traceback")
    elif kind == EventType.STEP_COMPLETED:
        raw = _load(event.data)
        step.done, step.success, step.end = True, True, event.ts
        if "stream" in raw:
            step.stream = raw["stream"]
            history.stream_bytes += int(raw["stream"]["bytes"])
        else:
            step.output = orjson.dumps(raw.get("output"))
        if step.attempts and step.attempts[-1].success:
            step.attempts[-1].output = step.output
    elif kind == EventType.STEP_ERRORED:
        assert data is not None
        step.done, step.success, step.end = True, False, event.ts
        step.error = data.get("error")
    elif kind == EventType.SLEEP_STARTED:
        assert data is not None
        step.wake_at = int(data["wakeAt"])
        step.config = {"durationMs": data.get("durationMs")}
    elif kind == EventType.SLEEP_COMPLETED:
        step.done, step.success, step.end = True, True, event.ts
    elif kind == EventType.WAIT_STARTED:
        assert data is not None
        step.wake_at = int(data["deadline"])
        step.event_type = data.get("eventType")
    elif kind == EventType.WAIT_COMPLETED:
        assert data is not None
        step.done, step.success, step.end = True, True, event.ts
        step.event = data.get("event")
    elif kind == EventType.WAIT_TIMED_OUT:
        assert data is not None
        step.done, step.success, step.end = True, False, event.ts
        step.error = data.get("error")


def _attempt(step: StepRecord, number: int, ts: int) -> AttemptRecord:
    for attempt in reversed(step.attempts):
        if attempt.attempt == number:
            return attempt
    attempt = AttemptRecord(number, ts)
    step.attempts.append(attempt)
    return attempt
