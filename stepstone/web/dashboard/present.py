"""What the templates show: times, durations, and the step timeline of an instance.

The timeline starts from ``views.step_entry`` (the API's rendering of a step, so previews and
redaction agree with ``GET .../instances/{id}``) and adds what a person wants beside it:
durations, retry delays and wake-up times, which the fold keeps but the API does not show.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
from markupsafe import Markup, escape

from stepstone import views
from stepstone.authoring.durations import format_duration
from stepstone.model import history as h
from stepstone.ops import ABORTED_BY_RESTART, ABORTED_BY_TERMINATE

_COUNTER = re.compile(r"^(.*)-(\d+)$")
KIND_LABELS = {h.DO: "step", h.SLEEP: "sleep", h.WAIT: "wait for event", h.ROLLBACK: "rollback"}
# The API keeps Cloudflare's wording for these attempt errors; a person reads what happened.
PLAIN_ERRORS = (
    (h.INTERNAL_ATTEMPT_ERROR, "worker lost (the process stopped)"),
    (ABORTED_BY_TERMINATE, "stopped: the instance was terminated"),
    (ABORTED_BY_RESTART, "stopped: the instance was restarted"),
)
_BREAKS = re.compile(r"([.:/_])")
_HUMPS = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def when(ms: int | None) -> str:
    """``2026-05-01 02:48:57 UTC``: readable, and sortable as text."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(ms: int | None) -> str:
    return "—" if ms is None else format_duration(ms)


def api_error_text(error: dict[str, Any] | None) -> str:
    """An error as the API shows it: ``name: message``."""
    error = error or {}
    return f"{error.get('name', 'Error')}: {error.get('message', '')}"


def error_text(error: dict[str, Any] | None) -> str:
    for known, plain in PLAIN_ERRORS:
        if error == known:
            return plain
    return api_error_text(error)


def is_lost(error: dict[str, Any] | None) -> bool:
    return error == h.INTERNAL_ATTEMPT_ERROR


def breakable(name: str) -> Markup:
    """A dotted name (``module.Class``) that may wrap only between its words: after a dot,
    colon, slash or underscore, or between the humps of a CamelCase name. Each word is kept
    whole by the stylesheet (``.part``), so a narrow screen never splits one."""
    out = []
    for piece in _BREAKS.split(name):
        if not piece:
            continue
        if _BREAKS.fullmatch(piece):
            out.append(f"{escape(piece)}<wbr>")
            continue
        humps = [h for h in _HUMPS.split(piece) if h]
        out.append("<wbr>".join(f'<span class="part">{escape(h)}</span>' for h in humps))
    return Markup("".join(out))


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
    def error_text(self) -> str:
        return error_text(self.error)

    @property
    def api_error_text(self) -> str:
        return api_error_text(self.error)

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
    # Of the time from its start to its end (or to now), how much the instance spent paused.
    paused_ms: int = 0
    # When it was cut short: the instance ended (terminated, errored) before it finished.
    stopped_at: int | None = None

    @property
    def error_text(self) -> str:
        return error_text(self.error)

    @property
    def label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind)

    @property
    def duration_ms(self) -> int | None:
        """Start to end, or to where the instance's end cut it short; None while it runs."""
        end = self.end if self.end is not None else self.stopped_at
        return None if end is None else end - self.start


def _status(step: h.StepRecord, ended: bool) -> str:
    if step.done:
        return "complete" if step.success else "errored"
    if ended:
        return "stopped"
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


def timeline(
    history: h.InstanceHistory,
    ended_on: int | None = None,
    paused: Callable[[int, int], int] | None = None,
    now: int | None = None,
) -> list[StepView]:
    """``ended_on`` is the end of an instance that has ended (terminated, errored, complete):
    a step still open then was cut short, not still sleeping or waiting. ``paused(start, end)``
    says how long the instance was paused within a stretch."""
    out = []
    for step in history.ordered():
        stopped = ended_on is not None and not step.done
        view = StepView(
            kind=step.kind,
            name=step.name,
            entry=views.step_entry(step),
            start=step.start,
            end=step.end,
            status=_status(step, ended_on is not None),
            wake_at=step.wake_at if step.kind in (h.SLEEP, h.WAIT) else None,
            event_type=step.event_type,
            error=step.error,
            sensitive=step.sensitive,
            restart_value=restart_value(step),
            stopped_at=ended_on if stopped else None,
        )
        until = step.end if step.end is not None else (ended_on if stopped else now)
        if paused is not None and until is not None:
            view.paused_ms = paused(step.start, until)
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
