"""The workflow page's charts for a chosen window: instances created and finished per status
over time, step durations (p50/p95) and retries per step name, and the backlog.

Read-only and bounded: storage has no aggregate read, so this pages through
``list_instances`` (one indexed read of at most ``MAX_INSTANCES + 1`` rows, newest created in
the window first) and folds the event logs of at most ``MAX_HISTORIES`` of those, newest first,
``HISTORY_READS`` at a time. A page load therefore costs one list read plus up to
``MAX_HISTORIES`` event reads, whatever the store's size; the page says when a cap was reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from stepstone.model import history as h
from stepstone.model.records import InstanceQuery, InstanceRecord, WorkflowRecord
from stepstone.model.statuses import TERMINAL
from stepstone.ops import Operations
from stepstone.web.dashboard import present

HOUR_MS = 3_600_000
# name -> (span, buckets): five-minute, hourly and six-hourly columns.
WINDOWS: dict[str, tuple[int, int]] = {
    "1h": (HOUR_MS, 12),
    "24h": (24 * HOUR_MS, 24),
    "7d": (7 * 24 * HOUR_MS, 28),
}
WINDOW_LABELS = {"1h": "1 h", "24h": "24 h", "7d": "7 d"}
DEFAULT_WINDOW = "24h"
MAX_INSTANCES = 2000
MAX_HISTORIES = 200
HISTORY_READS = 8
# The columns' SVG viewBox; stretched to the card's width.
WIDTH = 1000.0
HEIGHT = 100.0
# Stacking order, bottom up: finished outcomes first, then what is still moving.
STATUS_ORDER = (
    "complete",
    "errored",
    "terminated",
    "running",
    "queued",
    "waiting",
    "paused",
    "waitingForPause",
    "unknown",
)


@dataclass(frozen=True, slots=True)
class Segment:
    y: float
    height: float
    css: str
    title: str


@dataclass(slots=True)
class Column:
    x: float
    width: float
    segments: list[Segment] = field(default_factory=list)


@dataclass(slots=True)
class Columns:
    """One bar per bucket, stacked by status; ``totals`` per status over the window."""

    columns: list[Column]
    peak: int
    totals: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.totals.values())


@dataclass(frozen=True, slots=True)
class StepStat:
    name: str
    runs: int
    p50: int
    p95: int
    retries: int
    failed: int
    p50_width: float
    p95_width: float


@dataclass(slots=True)
class Charts:
    window: str
    label: str
    start: int
    end: int
    problem: str | None
    read: int
    capped: bool
    created: Columns
    finished: Columns
    backlog: Columns
    backlog_now: int
    steps: list[StepStat]
    sampled: int
    ticks: list[str]

    @property
    def windows(self) -> list[tuple[str, str]]:
        return list(WINDOW_LABELS.items())


def choose_window(value: str | None) -> tuple[str, str | None]:
    """The window asked for; an unknown one falls back to the default with a note (a chart
    is not worth an error page)."""
    if value is None or value == "":
        return DEFAULT_WINDOW, None
    if value in WINDOWS:
        return value, None
    shown = value if len(value) <= 20 else value[:20] + "…"
    choices = ", ".join(WINDOWS)
    return DEFAULT_WINDOW, f"unknown window {shown!r} (choose {choices}); showing 24 h"


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, -(-int(fraction * 1000) * len(sorted_values) // 1000))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class _Buckets:
    def __init__(self, start: int, end: int, count: int) -> None:
        self.start, self.count = start, count
        self.size = max(1, (end - start) // count)

    def index(self, ts: int) -> int | None:
        if ts < self.start:
            return None
        return min((ts - self.start) // self.size, self.count - 1)

    def end_of(self, index: int) -> int:
        return self.start + (index + 1) * self.size


def _columns(per_bucket: Sequence[Mapping[str, int]], what: str, buckets: _Buckets) -> Columns:
    peak = max((sum(b.values()) for b in per_bucket), default=0)
    step = WIDTH / len(per_bucket)
    totals: dict[str, int] = {}
    columns = []
    for index, counts in enumerate(per_bucket):
        column = Column(round(index * step + step * 0.1, 2), round(step * 0.8, 2))
        base = HEIGHT
        for status in sorted(counts, key=_rank):
            n = counts[status]
            totals[status] = totals.get(status, 0) + n
            height = n / peak * HEIGHT if peak else 0.0
            base -= height
            since = present.when(buckets.end_of(index) - buckets.size)
            title = f"{n} {what} {status} · from {since}"
            column.segments.append(Segment(round(base, 2), round(height, 2), status, title))
        columns.append(column)
    return Columns(columns, peak, totals)


def _rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


def _backlog(records: Sequence[InstanceRecord], buckets: _Buckets) -> list[dict[str, int]]:
    """At each bucket's end: instances created by then that had not started (nor ended)."""
    out: list[dict[str, int]] = []
    for index in range(buckets.count):
        at = buckets.end_of(index)
        waiting = sum(
            1
            for r in records
            if r.created_on <= at
            and (r.started_on is None or r.started_on > at)
            and (r.ended_on is None or r.ended_on > at)
        )
        out.append({"queued": waiting} if waiting else {})
    return out


async def _histories(ops: Operations, records: Sequence[InstanceRecord]) -> list[h.InstanceHistory]:
    gate = asyncio.Semaphore(HISTORY_READS)

    async def one(record: InstanceRecord) -> h.InstanceHistory:
        async with gate:
            return await ops.history(record)

    return await asyncio.gather(*(one(r) for r in records))


def given_name(recorded: str) -> str:
    """The name the code gave ``step.do``: the log keys the n-th call of a name as
    ``name-n``, so a step called in a loop counts as one step here."""
    base, dash, count = recorded.rpartition("-")
    return base if dash and count.isdigit() else recorded


def step_stats(histories: Sequence[h.InstanceHistory]) -> list[StepStat]:
    """Per step name: how long finished runs took (first attempt to the end, retry delays
    included), how many attempts were retries, and how many runs failed for good."""
    durations: dict[str, list[int]] = {}
    retries: dict[str, int] = {}
    failed: dict[str, int] = {}
    for history in histories:
        for step in history.ordered():
            if step.kind != h.DO:
                continue
            name = given_name(step.name)
            retries[name] = retries.get(name, 0) + max(0, len(step.attempts) - 1)
            durations.setdefault(name, [])
            if step.done and step.end is not None:
                durations[name].append(step.end - step.start)
                if step.success is False:
                    failed[name] = failed.get(name, 0) + 1
    stats = []
    longest = max((max(v) for v in durations.values() if v), default=0)
    for name, values in durations.items():
        values.sort()
        p50 = percentile(values, 0.5) if values else 0
        p95 = percentile(values, 0.95) if values else 0
        scale = WIDTH / longest if longest else 0.0
        stats.append(
            StepStat(
                name,
                len(values),
                p50,
                p95,
                retries.get(name, 0),
                failed.get(name, 0),
                round(max(2.0, p50 * scale), 2),
                round(max(2.0, p95 * scale), 2),
            )
        )
    stats.sort(key=lambda s: (-s.p95, s.name))
    return stats


async def build(
    ops: Operations, workflow: WorkflowRecord, window: str | None, counts: Mapping[str, int]
) -> Charts:
    chosen, problem = choose_window(window)
    span, count = WINDOWS[chosen]
    end = ops.now()
    start = end - span
    rows = await ops.instances(
        workflow.pk, InstanceQuery(created_from=start, limit=MAX_INSTANCES + 1)
    )
    capped = len(rows) > MAX_INSTANCES
    records = [r for r in rows[:MAX_INSTANCES] if r.created_on <= end]
    buckets = _Buckets(start, end, count)
    created: list[dict[str, int]] = [{} for _ in range(count)]
    finished: list[dict[str, int]] = [{} for _ in range(count)]
    for r in records:
        at = buckets.index(r.created_on)
        if at is not None:
            created[at][r.status] = created[at].get(r.status, 0) + 1
        if r.status in TERMINAL and r.ended_on is not None:
            done = buckets.index(min(r.ended_on, end))
            if done is not None:
                finished[done][r.status] = finished[done].get(r.status, 0) + 1
    sample = records[:MAX_HISTORIES]
    histories = await _histories(ops, sample)
    label = WINDOW_LABELS[chosen]
    ticks = [present.when(start + span * i // 4) for i in range(5)]
    return Charts(
        window=chosen,
        label=label,
        start=start,
        end=end,
        problem=problem,
        read=len(records),
        capped=capped,
        created=_columns(created, "created", buckets),
        finished=_columns(finished, "finished", buckets),
        backlog=_columns(_backlog(records, buckets), "waiting to start", buckets),
        backlog_now=int(counts.get("queued", 0)),
        steps=step_stats(histories),
        sampled=len(sample),
        ticks=ticks,
    )
