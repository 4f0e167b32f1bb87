"""Restarts from a step, and stopped runs: which events a restart drops, which events the
dropped waits had consumed, and how a stopped attempt is recorded."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stepstone.errors import (
    CannotRestart,
    InvalidRequest,
)
from stepstone.model import history as h
from stepstone.model.events import ROLLBACK_PREFIX, EventType
from stepstone.storage.base import (
    EventRecord,
    NewEvent,
)

RESTART_TYPES = {"do": h.DO, "sleep": h.SLEEP, "waitForEvent": h.WAIT}
COUNTER_SUFFIX = re.compile(r"-\d+$")
# Cloudflare's wording for an engine stopped by its user (workflows-shared ABORT_REASONS),
# recorded as the error of the attempt that was running.
ABORTED_BY_TERMINATE = {"name": "Error", "message": "Aborting engine: User called terminate"}
ABORTED_BY_RESTART = {"name": "Error", "message": "Aborting engine: User called restart"}


@dataclass(frozen=True, slots=True)
class RestartFrom:
    name: str
    count: int = 1
    type: str = "do"
    # A Stepstone extension: "drop" (Cloudflare's behaviour) forgets the events the dropped
    # steps had received and any not yet consumed; "replay" keeps the unconsumed ones and
    # sends the consumed ones again, in the order they first arrived, for the new run.
    events: str = "drop"


RESTART_EVENTS = ("drop", "replay")


def end_running_attempts(
    error: dict[str, Any], now: int
) -> Callable[[Sequence[EventRecord]], list[NewEvent]]:
    """A ``Transition.closing`` that records each attempt still running as failed with
    ``error``. The worker running it is fenced by the same transition, so the attempt can
    record nothing itself, and its step is never retried by that activation."""

    def closing(events: Sequence[EventRecord]) -> list[NewEvent]:
        ended = []
        for (kind, name), record in h.fold(list(events)).steps.items():
            dangling = record.dangling_attempt
            if dangling is None:
                continue
            prefix = ROLLBACK_PREFIX if kind == h.ROLLBACK else ""
            data = orjson.dumps({"attempt": dangling.attempt, "error": error})
            ended.append(NewEvent(prefix + EventType.ATTEMPT_ERRORED, now, data, kind, name))
        return ended

    return closing


def consumed_events(
    events: Sequence[EventRecord], dropped: Sequence[int]
) -> list[tuple[str, bytes]]:
    """``(type, payload)`` of each event a wait_for_event in the dropped groups consumed,
    in the order the events arrived."""
    gone = set(dropped)
    found: list[tuple[int, int, str, bytes]] = []
    for event in events:
        if event.event_id in gone and event.type == EventType.WAIT_COMPLETED and event.data:
            got = orjson.loads(event.data).get("event") or {}
            if isinstance(got.get("type"), str):
                payload = orjson.dumps(got.get("payload"))
                found.append((int(got.get("timestamp") or 0), event.event_id, got["type"], payload))
    return [(kind, payload) for _, _, kind, payload in sorted(found)]


def restart_cut(events: Sequence[Any], target: RestartFrom) -> tuple[list[int], list[str]]:
    """Event ids to drop for a restart from ``target``, and the streams of dropped steps.

    The target step's group and every group that started after it go; so do instance-level
    events other than the first ``workflow_queued`` and ``workflow_started``.
    """
    kind = RESTART_TYPES.get(target.type)
    if kind is None:
        raise InvalidRequest("from.type must be do, sleep or waitForEvent")
    history = h.fold(list(events))
    seen = 0
    cut: int | None = None
    for record in history.ordered():
        if record.kind == kind and COUNTER_SUFFIX.sub("", record.name) == target.name:
            seen += 1
            if seen == target.count:
                cut = record.first_event_id
                break
    if cut is None:
        raise CannotRestart(f'Step "{target.name}" not found in execution history')
    dropped_groups = {k for k, s in history.steps.items() if s.first_event_id >= cut}
    drop: list[int] = []
    kept_lifecycle: set[str] = set()
    for event in events:
        if event.step_kind is None:
            if event.type in (EventType.WORKFLOW_QUEUED, EventType.WORKFLOW_STARTED) and (
                event.type not in kept_lifecycle
            ):
                kept_lifecycle.add(event.type)
                continue
            drop.append(event.event_id)
        elif (event.step_kind, event.step_name) in dropped_groups:
            drop.append(event.event_id)
    streams = [name for kind_, name in dropped_groups if kind_ == h.DO]
    return drop, streams
