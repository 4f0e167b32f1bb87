"""What the engine calls around an activation and a step attempt: one object each that keeps
the span, the log context and the start time, so each call site is one line."""

from __future__ import annotations

import time
from collections.abc import Sequence

import orjson

from stepstone.model.events import EventType
from stepstone.model.history import InstanceHistory
from stepstone.observability import logs, metrics, tracing
from stepstone.storage.base import EventRecord, InstanceRecord


def queued_traceparent(events: Sequence[EventRecord]) -> str | None:
    """The creator's trace context, from the (latest) ``workflow_queued`` event."""
    for event in reversed(events):
        if event.type == EventType.WORKFLOW_QUEUED:
            data = orjson.loads(event.data) if event.data else {}
            value = data.get("traceparent") if isinstance(data, dict) else None
            return value if isinstance(value, str) else None
    return None


def woken_at(history: InstanceHistory, now_ms: int) -> int | None:
    """When the timer that made this activation due fell due: the latest sleep, wait timeout
    or retry of an unfinished step that is due by now; None if no timer woke it (an event,
    a resume)."""
    due = None
    for step in history.steps.values():
        if step.done:
            continue
        for at in (step.wake_at, step.retry_at):
            if at is not None and at <= now_ms and (due is None or at > due):
                due = at
    return due


class ActivationProbe:
    __slots__ = ("_log", "_span")

    def __init__(
        self,
        workflow: str,
        instance: InstanceRecord,
        events: Sequence[EventRecord],
        epoch: int,
        history: InstanceHistory,
        now_ms: int,
    ) -> None:
        self._log = logs.in_instance(workflow, instance.id)
        if history.started_at is None:  # a first run: due since it was queued (or restarted)
            due: int | None = history.queued_at or instance.created_on
        else:
            due = woken_at(history, now_ms)
        if due is not None:
            metrics.WAKEUP_LAG_SECONDS.observe(max(0, now_ms - due) / 1000)
        self._span = tracing.activation(workflow, instance.id, queued_traceparent(events), epoch)

    def end(self, error: BaseException | None = None) -> None:
        self._span.end(error)
        logs.left_instance(self._log)


class AttemptProbe:
    __slots__ = ("_span", "_started", "workflow")

    def __init__(self, workflow: str, kind: str, name: str, attempt: int) -> None:
        self.workflow = workflow
        logs.in_step(name, attempt)
        self._span = tracing.step_attempt(kind, name, attempt)
        self._started = time.perf_counter()

    def end(self, error: BaseException | None = None) -> None:
        metrics.attempt_done(self.workflow, "success" if error is None else "error", self._started)
        self._span.end(error)
        logs.in_step_done()

    def retried(self) -> None:
        metrics.STEP_RETRIES.labels(self.workflow).inc()
