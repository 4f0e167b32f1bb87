"""What the templates show: times, durations, and the step timeline of an instance.

The timeline starts from ``views.step_entry`` (the API's rendering of a step, so previews and
redaction agree with ``GET .../instances/{id}``) and adds what a person wants beside it:
durations, retry delays and wake-up times, which the fold keeps but the API does not show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson

from stepstone import views
from stepstone.authoring.durations import format_duration
from stepstone.engine import history as h

_COUNTER = re.compile(r"^(.*)-(\d+)$")
KIND_LABELS = {h.DO: "step", h.SLEEP: "sleep", h.WAIT: "wait for event", h.ROLLBACK: "rollback"}


def when(ms: int | None) -> str:
    """``2026-05-01 02:48:57 UTC``: readable, and sortable as text."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(ms: int | None) -> str:
    return "—" if ms is None else format_duration(ms)


def seg(value: str) -> str:
    """A path segment, every reserved character encoded."""
    return quote(value, safe="")


def pretty(value: Any) -> str:
    """A JSON-ish value as text for a <pre>."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return str(value)
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


@dataclass
class AttemptView:
    number: int
    start: int
    end: int | None
    success: bool | None
    error: dict[str, Any] | None
    retry_at: int | None
    traceback: str | None = None

    @property
    def duration_ms(self) -> int | None:
        return None if self.end is None else self.end - self.start

    @property
    def retry_delay_ms(self) -> int | None:
        if self.retry_at is None or self.end is None:
            return None
        return max(0, self.retry_at - self.end)


@dataclass
class StepView:
    kind: str
    name: str
    entry: dict[str, Any]
    start: int
    end: int | None
    status: str
    attempts: list[AttemptView] = field(default_factory=list)
    wake_at: int | None = None
    event_type: str | None = None
    error: dict[str, Any] | None = None
    sensitive: bool = False
    stream_bytes: int | None = None
    has_output: bool = False
    restart_value: str | None = None

    @property
    def label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind)

    @property
    def duration_ms(self) -> int | None:
        return None if self.end is None else self.end - self.start


def _status(step: h.StepRecord) -> str:
    if step.done:
        return "complete" if step.success else "errored"
    if step.kind == h.SLEEP:
        return "sleeping"
    if step.kind == h.WAIT:
        return "waiting"
    if step.retry_at is not None:
        return "retrying"
    return "running"


def restart_value(step: h.StepRecord) -> str | None:
    """``kind:count:name`` for the restart form; rollbacks are not restart points."""
    if step.kind == h.ROLLBACK:
        return None
    match = _COUNTER.match(step.name)
    name, count = (match.group(1), int(match.group(2))) if match else (step.name, 1)
    return f"{step.kind}:{count}:{name}"


def parse_restart_value(value: str) -> tuple[str, int, str]:
    kind, count, name = value.split(":", 2)
    return kind, int(count), name


def timeline(history: h.InstanceHistory) -> list[StepView]:
    out = []
    for step in history.ordered():
        view = StepView(
            kind=step.kind,
            name=step.name,
            entry=views.step_entry(step),
            start=step.start,
            end=step.end,
            status=_status(step),
            wake_at=step.wake_at if step.kind in (h.SLEEP, h.WAIT) else None,
            event_type=step.event_type,
            error=step.error,
            sensitive=step.sensitive,
            restart_value=restart_value(step),
        )
        for attempt in step.attempts:
            view.attempts.append(
                AttemptView(
                    attempt.attempt,
                    attempt.start,
                    attempt.end,
                    attempt.success,
                    attempt.error,
                    attempt.retry_at,
                    attempt.traceback,
                )
            )
        if step.stream is not None:
            view.stream_bytes = int(step.stream["bytes"])
        view.has_output = bool(step.done and step.success and step.kind in (h.DO, h.ROLLBACK))
        if step.kind == h.WAIT and step.done and step.success:
            view.has_output = True
        out.append(view)
    return out
