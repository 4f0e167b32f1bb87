"""Repair and resume (a Stepstone extension): an operator rewrites one step's record.

For an errored or paused instance, a failed or completed ``step.do`` gets a new recorded
output (as if its last attempt had returned it). Replay answers that step from the record, so
the step body never runs again. Resuming an errored instance drops what came after the
repaired step's group (its ``workflow_errored``, any group started later), as a restart from a
step does, but keeps the repaired group; the instance is then queued.

The repair is two events in the log: a ``step_completed`` in the step's group carrying
``repaired`` (what replay reads) and an instance-level ``step_repaired`` (the history entry an
operator reads). Cloudflare's clients see the step as completed with the given output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stepstone.errors import InvalidAction, InvalidRequest, StepNotFound
from stepstone.model import history as h
from stepstone.model.actors import EMBEDDED_ACTOR, Actor
from stepstone.model.events import EventType
from stepstone.model.statuses import Status
from stepstone.ops import Operations, check_payload_size, restart_cut
from stepstone.storage.base import Conflict, EventRecord, InstanceRecord, NewEvent, Transition

REPAIRABLE = frozenset({Status.ERRORED, Status.PAUSED})
REPAIRED_EVENT = EventType.STEP_REPAIRED


@dataclass(frozen=True, slots=True)
class RepairRequest:
    step: str
    # JSON text of the new output.
    output: bytes
    resume: bool = False
    # Who asked: kept in the history entry and the audit log.
    actor: Actor = EMBEDDED_ACTOR


@dataclass(frozen=True, slots=True)
class RepairResult:
    status: str
    step: str
    previous: dict[str, Any]


def parse_output(text: str | bytes) -> bytes:
    """The canonical JSON of an output, or a clear 400."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"output is not valid JSON: {exc}") from None
    data = orjson.dumps(value)
    check_payload_size(data)
    return data


def find_step(events: Sequence[EventRecord], name: str) -> h.StepRecord:
    """The ``step.do`` named ``name`` as recorded ("charge-1"), or the only one of that base
    name ("charge" when exactly one "charge-N" exists)."""
    steps = [s for s in h.fold(list(events)).ordered() if s.kind == h.DO]
    for step in steps:
        if step.name == name:
            return step
    matches = [s for s in steps if s.name.rsplit("-", 1)[0] == name]
    if len(matches) == 1:
        return matches[0]
    recorded = ", ".join(s.name for s in steps) or "none"
    if matches:
        raise StepNotFound(
            f'step "{name}" ran {len(matches)} times; name one of: '
            + ", ".join(s.name for s in matches)
        )
    raise StepNotFound(f'step "{name}" not found in execution history (steps: {recorded})')


def _previous(step: h.StepRecord) -> dict[str, Any]:
    if step.done and step.success:
        return {"success": True}
    last = step.attempts[-1] if step.attempts else None
    error = step.error or (last.error if last is not None else None)
    return {"success": False if step.done or error else None, "error": error}


def _check_status(instance: InstanceRecord) -> None:
    if instance.status not in REPAIRABLE:
        raise InvalidAction(
            f"Cannot repair instance {instance.id!r} while it is {instance.status}: only"
            " errored or paused instances can be repaired (pause it first)"
        )


def _check_step(instance: InstanceRecord, step: h.StepRecord) -> None:
    if step.stream is not None:
        raise InvalidRequest(f'step "{step.name}" returned a byte stream; repair sets JSON only')
    if step.dangling_attempt is not None and instance.status != Status.ERRORED:
        raise InvalidAction(f'step "{step.name}" has an attempt running; wait for it to end')


def _repair_cut(events: Sequence[EventRecord], step: h.StepRecord) -> tuple[list[int], list[str]]:
    """Restart-from-step's cut, minus the repaired group: instance-level events after the
    first queued/started go, and so does every group started after the repaired one."""
    target = _target_of(events, step)
    drop, streams = restart_cut(events, target)
    group = (step.kind, step.name)
    kept = {e.event_id for e in events if (e.step_kind, e.step_name) == group}
    return [i for i in drop if i not in kept], [s for s in streams if s != step.name]


def _target_of(events: Sequence[EventRecord], step: h.StepRecord) -> Any:
    from stepstone.ops.restarts import COUNTER_SUFFIX, RestartFrom

    base = COUNTER_SUFFIX.sub("", step.name)
    count = 0
    for record in h.fold(list(events)).ordered():
        if record.kind == h.DO and COUNTER_SUFFIX.sub("", record.name) == base:
            count += 1
            if record.name == step.name:
                break
    return RestartFrom(name=base, count=count, type="do")


async def repair(
    ops: Operations, account_id: str, workflow_name: str, instance_id: str, req: RepairRequest
) -> RepairResult:
    """Rewrite the step's record and, with ``resume``, queue the instance again; audited
    (action ``repair``) whatever the outcome."""
    detail = {"step": req.step, "resume": req.resume}
    where = (account_id, workflow_name, instance_id)
    work = _repair(ops, account_id, workflow_name, instance_id, req)
    result: RepairResult = await ops._audited(req.actor, "repair", where, detail, work, None, None)
    return result


async def _repair(
    ops: Operations, account_id: str, workflow_name: str, instance_id: str, req: RepairRequest
) -> RepairResult:
    output = orjson.loads(req.output)
    by = req.actor.describe()
    for _ in range(20):
        _, instance = await ops.instance(account_id, workflow_name, instance_id)
        _check_status(instance)
        events = await ops.storage.load_events(instance.pk)
        step = find_step(events, req.step)
        _check_step(instance, step)
        now = ops.now()
        previous = _previous(step)
        repaired = {"at": now, "by": by, "previous": previous}
        written = [
            NewEvent(
                EventType.STEP_COMPLETED,
                now,
                orjson.dumps({"output": output, "repaired": repaired}),
                h.DO,
                step.name,
            ),
            NewEvent(
                REPAIRED_EVENT,
                now,
                orjson.dumps(
                    {"step": step.name, "by": by, "previous": previous, "resume": req.resume}
                ),
            ),
        ]
        transition = _transition(instance, events, step, written, req.resume, now)
        try:
            await ops.storage.transition_instance(instance.pk, instance.status, transition, now)
        except Conflict:
            continue
        return RepairResult(str(transition.status), step.name, previous)
    raise Conflict(f"instance {instance_id!r} kept changing; try again")


def _transition(
    instance: InstanceRecord,
    events: Sequence[EventRecord],
    step: h.StepRecord,
    written: list[NewEvent],
    resume: bool,
    now: int,
) -> Transition:
    if not resume:
        return Transition(status=instance.status, events=written)
    if instance.status == Status.PAUSED:
        paused_ms = max(0, now - (instance.paused_at or now))
        running = NewEvent(EventType.WORKFLOW_RUNNING, now, orjson.dumps({"pausedMs": paused_ms}))
        return Transition(
            status=Status.QUEUED,
            runnable=True,
            priority=0,
            clear_paused_at=True,
            events=[*written, running],
        )
    drop, streams = _repair_cut(events, step)
    return Transition(
        status=Status.QUEUED,
        runnable=True,
        priority=0,
        reset_history=drop,
        reset_streams=streams,
        clear_outcome=True,
        clear_paused_at=True,
        events=written,
    )
