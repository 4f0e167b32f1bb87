"""Read-only views the dashboard draws beyond the API: pauses, retry notes, the time-axis chart
of an instance and the step graph a completed instance recorded.

Everything here starts from the event log through ``history.fold`` (what the engine replays),
plus the instance-level events the fold does not keep (pause and resume).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stepstone.model import history as h
from stepstone.model.events import EventType
from stepstone.model.records import EventRecord, InstanceQuery, InstanceRecord, WorkflowRecord
from stepstone.model.statuses import TERMINAL
from stepstone.ops import Operations
from stepstone.web.dashboard import present

# The chart's horizontal unit: an SVG viewBox this wide, stretched to the row's width.
SCALE = 1000.0
# Even a 2 ms attempt on an hour-long axis stays visible and hoverable.
MIN_WIDTH = 3.0
TICKS = 5
# Lanes drawn at most: past this a chart is no longer readable, and the cards below list all.
MAX_LANES = 200
# How many of a workflow's newest completed instances are looked at to find one of the current
# version; the graph says so when none of them is.
GRAPH_SEARCH = 50
# A resume, or the end of an instance terminated (or restarted) while paused.
_PAUSE_ENDS = {
    EventType.WORKFLOW_RUNNING: "resumed",
    EventType.WORKFLOW_QUEUED: "restarted",
    EventType.WORKFLOW_TERMINATED: "terminated",
}


@dataclass(frozen=True, slots=True)
class Pause:
    start: int
    end: int | None  # None: still paused
    ended_by: str = "resumed"

    def overlap(self, start: int, end: int) -> int:
        stop = end if self.end is None else min(self.end, end)
        return max(0, stop - max(self.start, start))


def pauses(events: Sequence[EventRecord]) -> list[Pause]:
    """Each stretch the instance spent paused: from ``workflow_paused`` to the next
    ``workflow_running`` (a resume), or open while it is still paused."""
    out: list[Pause] = []
    since: int | None = None
    for event in events:
        if event.step_kind is not None:
            continue
        if event.type == EventType.WORKFLOW_PAUSED and since is None:
            since = event.ts
        elif event.type in _PAUSE_ENDS and since is not None:
            out.append(Pause(since, event.ts, _PAUSE_ENDS[event.type]))
            since = None
    if since is not None:
        out.append(Pause(since, None))
    return out


def paused_within(stretches: Sequence[Pause], start: int, end: int) -> int:
    return sum(p.overlap(start, end) for p in stretches)


# --- retrying ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryNote:
    step: str
    attempt: int  # the attempt that runs next
    of: int  # every attempt the step's config allows
    at: int

    @property
    def text(self) -> str:
        return f"retrying (attempt {self.attempt} of {self.of}, next at {present.when(self.at)})"


def retry_note(history: h.InstanceHistory) -> RetryNote | None:
    """The step waiting out a retry delay, if any (the first one, when several run at once)."""
    for step in history.ordered():
        if step.retry_at is None:
            continue
        limit = ((step.config or {}).get("retries") or {}).get("limit")
        allowed = int(limit) + 1 if isinstance(limit, int) else 0
        next_attempt = step.attempts[-1].attempt + 1
        return RetryNote(step.name, next_attempt, max(allowed, next_attempt), step.retry_at)
    return None


async def retry_notes(ops: Operations, records: Sequence[InstanceRecord]) -> dict[str, RetryNote]:
    """Retry notes for a page of the list. Only a ``waiting`` instance can be between attempts
    (the activation parks it), so only those rows read their history: one event read each, run
    together, at most one page of them."""
    waiting = [r for r in records if r.status == "waiting"]
    histories = await asyncio.gather(*(ops.history(r) for r in waiting))
    notes = {}
    for record, history in zip(waiting, histories, strict=True):
        note = retry_note(history)
        if note is not None:
            notes[record.id] = note
    return notes


# --- the chart -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    css: str
    title: str


@dataclass(slots=True)
class Row:
    label: str
    kind: str
    status: str
    anchor: str | None
    bars: list[Bar] = field(default_factory=list)


@dataclass(slots=True)
class Chart:
    start: int
    end: int
    rows: list[Row]
    ticks: list[str]
    pauses: list[Bar]
    ended: Bar | None
    hidden: int = 0  # steps past MAX_LANES, not drawn

    @property
    def span_ms(self) -> int:
        return self.end - self.start


class _Axis:
    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.span = max(1, end - start)

    def bar(self, start: int, end: int, css: str, title: str) -> Bar:
        x = (start - self.start) / self.span * SCALE
        width = max(MIN_WIDTH, (end - start) / self.span * SCALE)
        x = min(max(0.0, x), SCALE - MIN_WIDTH)
        return Bar(round(x, 2), round(min(width, SCALE - x), 2), css, title)


def _attempt_title(step: present.StepView, attempt: present.AttemptView, end: int) -> str:
    what = f"{step.name} · attempt {attempt.number} · {present.duration(end - attempt.start)}"
    if attempt.success is True:
        return what + " · succeeded"
    if attempt.success is None:
        return what + " · running"
    return what + " · " + present.error_text(attempt.error)


def chart(
    record: InstanceRecord,
    history: h.InstanceHistory,
    steps: Sequence[present.StepView],
    stretches: Sequence[Pause],
    now: int,
) -> Chart | None:
    """Steps and attempts as bars on one time axis, from the instance's start to its end (or
    now): a sleep or a wait is an outlined gap, a retry delay a dashed one, a pause a band."""
    if not steps:
        return None
    begin = min(record.started_on or history.started_at or record.created_on, steps[0].start)
    ended = record.ended_on if record.status in TERMINAL else None
    finish = max(ended or now, begin + 1)
    axis = _Axis(begin, finish)
    rows = []
    for index, step in enumerate(steps[:MAX_LANES], start=1):
        row = Row(step.name, step.label, step.status, f"step-{index}")
        step_end = step.end if step.end is not None else finish
        if step.kind in (h.SLEEP, h.WAIT):
            paused = paused_within(stretches, step.start, step_end)
            title = f"{step.label} {step.name} · {present.duration(step_end - step.start)}"
            if paused:
                title += f" ({present.duration(paused)} paused)"
            row.bars.append(axis.bar(step.start, step_end, f"gap {step.status}", title))
        for n, attempt in enumerate(step.attempts):
            end = attempt.end if attempt.end is not None else finish
            css = "attempt " + {True: "ok", False: "fail", None: "run"}[attempt.success]
            if present.is_lost(attempt.error):
                css += " lost"
            row.bars.append(axis.bar(attempt.start, end, css, _attempt_title(step, attempt, end)))
            if attempt.success is False and attempt.end is not None:
                following = step.attempts[n + 1].start if n + 1 < len(step.attempts) else None
                resume = following or attempt.retry_at
                if resume is not None and resume > attempt.end:
                    delay = present.duration(resume - attempt.end)
                    title = f"{step.name} · retry delay {delay} before attempt {attempt.number + 1}"
                    row.bars.append(axis.bar(attempt.end, min(resume, finish), "retry", title))
        if not step.attempts and step.kind not in (h.SLEEP, h.WAIT):
            row.bars.append(axis.bar(step.start, step_end, "attempt run", step.name))
        rows.append(row)
    bands = [
        axis.bar(
            p.start,
            p.end or finish,
            "paused",
            f"paused {present.when(p.start)} · {present.duration((p.end or finish) - p.start)}",
        )
        for p in stretches
    ]
    end_bar = None
    if ended is not None:
        title = f"{record.status} {present.when(ended)}"
        end_bar = axis.bar(ended, ended, f"end {record.status}", title)
    span = finish - begin
    ticks = [present.duration(span * i // (TICKS - 1)) for i in range(TICKS)]
    return Chart(begin, finish, rows, ticks, bands, end_bar, max(0, len(steps) - MAX_LANES))


# --- the recorded step graph ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    kind: str
    name: str
    detail: str


@dataclass(slots=True)
class Graph:
    instance: InstanceRecord
    stages: list[list[Node]]


def stages(history: h.InstanceHistory) -> list[list[Node]]:
    """Steps in the order they started; steps that ran at the same time (``asyncio.gather``)
    share a stage."""
    out: list[list[Node]] = []
    stage_end = -1
    for step in history.ordered():
        if step.kind == h.ROLLBACK:
            continue
        node = Node(present.KIND_LABELS.get(step.kind, step.kind), step.name, _detail(step))
        end = step.end if step.end is not None else step.start
        if out and step.start < stage_end:
            out[-1].append(node)
            stage_end = max(stage_end, end)
        else:
            out.append([node])
            stage_end = end
    return out


def _detail(step: h.StepRecord) -> str:
    if step.kind == h.WAIT:
        return f"event {step.event_type}"
    if step.kind == h.SLEEP:
        duration = (step.config or {}).get("durationMs")
        return present.duration(int(duration)) if isinstance(duration, int) else ""
    retries: Any = ((step.config or {}).get("retries") or {}).get("limit")
    return f"{retries} retries" if isinstance(retries, int) else ""


async def recorded_graph(ops: Operations, workflow: WorkflowRecord) -> Graph | None:
    """The steps the newest completed instance of the current version ran. A Python class has
    no static graph, so this is what one run recorded, not every path the code can take."""
    query = InstanceQuery(status="complete", limit=GRAPH_SEARCH)
    for record in await ops.instances(workflow.pk, query):
        if record.version_id == workflow.version.id:
            return Graph(record, stages(await ops.history(record)))
    return None
