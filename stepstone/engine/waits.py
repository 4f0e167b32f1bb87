"""``step.sleep``, ``step.sleep_until`` and ``step.wait_for_event``: steps that wait for a time
or an event rather than do work.

The first call records when the wait ends (the wake-up time, or the event's deadline); until
then each activation parks the step, so a waiting instance holds no memory. The record's
wake-up time wins over the code's current one, as a recorded step.do config does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from stepstone.engine.arguments import duration_argument
from stepstone.engine.errors_codec import recreate_error
from stepstone.engine.holding import holding
from stepstone.engine.step_host import park
from stepstone.errors import WorkflowFatalError, WorkflowTimeoutError
from stepstone.model import history as h
from stepstone.model.events import EventType
from stepstone.observability import tracing
from stepstone.storage.base import DeliveredEvent
from stepstone.validation import event_type_problem

if TYPE_CHECKING:
    from stepstone.engine.step_host import StepHost

MAX_SLEEP_MS = 365 * 86_400_000
MIN_WAIT_TIMEOUT_MS = 1_000


def sleep_ms(name: str, duration: Any) -> int:
    ms = duration_argument(duration, f'step.sleep("{name}")')
    if ms > MAX_SLEEP_MS:
        raise WorkflowFatalError(f'step.sleep("{name}"): the longest sleep is 365 days')
    return ms


def sleep_until_ms(name: str, timestamp: datetime | int | float) -> int:
    if isinstance(timestamp, datetime):
        # A naive datetime is local time, as datetime.timestamp() reads it; on Cloudflare
        # the runtime's zone is UTC, so both agree there.
        return int(timestamp.timestamp() * 1000)
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        return int(timestamp)  # epoch milliseconds, as Cloudflare's engine reads numbers
    raise WorkflowFatalError(f"step.sleep_until({name!r}): give a datetime or epoch ms")


def wait_timeout_ms(
    name: str, event_type: str, timeout: Any, match: Mapping[str, Any] | None
) -> int:
    """Check ``step.wait_for_event``'s arguments; return the timeout in milliseconds."""
    problem = event_type_problem(event_type)
    if problem:
        raise WorkflowFatalError(f"step.wait_for_event({name!r}): {problem}")
    if match is not None:
        problem = _match_problem(match)
        if problem:
            raise WorkflowFatalError(f"step.wait_for_event({name!r}) match: {problem}")
    timeout_ms = duration_argument(timeout, f'step.wait_for_event("{name}") timeout')
    if not MIN_WAIT_TIMEOUT_MS <= timeout_ms <= MAX_SLEEP_MS:
        raise WorkflowFatalError(
            f"step.wait_for_event({name!r}): the timeout is between 1 second and 365 days"
        )
    return timeout_ms


async def sleep(
    act: StepHost,
    key: tuple[str, str],
    compute_wake: Callable[[int], int],
    duration_ms: int | None,
) -> None:
    """Record the sleep if it is new; return once it is over, park until then."""
    record = act.history.steps.get(key)
    if act.replay_only or (record is not None and record.done):
        return
    act.executing += 1
    try:
        now = act.now()
        if record is None:
            wake = compute_wake(now)
            record = h.StepRecord(h.SLEEP, key[1], 0, now, wake_at=wake)
            act.history.steps[key] = record
            shown = duration_ms if duration_ms is not None else wake - now
            act.write_nowait(
                [act.event(EventType.SLEEP_STARTED, {"durationMs": shown, "wakeAt": wake}, key)]
            )
        assert record.wake_at is not None
        if act.now() >= record.wake_at:
            act.write_nowait([act.event(EventType.SLEEP_COMPLETED, {}, key)])
            record.done = True
            tracing.wait("sleep", key[1], record.start)
            return
        await park(act, record.wake_at)
    finally:
        act.executing -= 1


async def wait_for_event(
    act: StepHost,
    key: tuple[str, str],
    event_type: str,
    timeout_ms: int,
    match: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Take the first buffered event of ``event_type`` (that ``match`` accepts); fail the
    step once its deadline has passed without one, park until then."""
    record = act.history.steps.get(key)
    if act.replay_only:
        if record is not None and record.done and record.success:
            return wait_result(record)
        return {"payload": None, "timestamp": None, "type": event_type}
    act.executing += 1
    try:
        if record is not None and record.done:
            return wait_result(record)
        if record is None:
            record = _start_wait(act, key, event_type, timeout_ms)
        await act.settle()
        if act.holds_new_steps:
            await park(act, None)
        delivered = await _take_event(act, key, event_type, match)
        if delivered is not None:
            record.done, record.success = True, True
            tracing.wait("wait", key[1], record.start)
            record.event = {
                "type": event_type,
                "payload": orjson.loads(delivered.payload),
                "timestamp": delivered.ts,
            }
            return wait_result(record)
        assert record.wake_at is not None
        if act.now() >= record.wake_at:
            await _time_out(act, key, record, timeout_ms)
        await park(act, record.wake_at)
    finally:
        act.executing -= 1


def wait_result(record: h.StepRecord) -> dict[str, Any]:
    """What a finished wait returns: the event it took, or its timeout raised again."""
    if not record.success:
        raise recreate_error(record.error)
    event = record.event or {}
    return {
        "payload": event.get("payload"),
        "timestamp": datetime.fromtimestamp(int(event.get("timestamp") or 0) / 1000, UTC),
        "type": event.get("type"),
    }


def _start_wait(
    act: StepHost, key: tuple[str, str], event_type: str, timeout_ms: int
) -> h.StepRecord:
    now = act.now()
    record = h.StepRecord(h.WAIT, key[1], 0, now, wake_at=now + timeout_ms)
    record.event_type = event_type
    act.history.steps[key] = record
    started = {"eventType": event_type, "timeoutMs": timeout_ms, "deadline": record.wake_at}
    act.write_nowait([act.event(EventType.WAIT_STARTED, started, key)])
    return record


async def _take_event(
    act: StepHost, key: tuple[str, str], event_type: str, match: Mapping[str, Any] | None
) -> DeliveredEvent | None:
    """Consume the event and record the wait's completion in one write, or find none."""
    completion = act.event(EventType.WAIT_COMPLETED, {}, key)
    if match is None:
        return await act.consume_event(event_type, completion)
    with holding():
        return await act.storage.consume_event(act.claim, event_type, completion, match)


async def _time_out(
    act: StepHost, key: tuple[str, str], record: h.StepRecord, timeout_ms: int
) -> NoReturn:
    error = {
        "name": "WorkflowTimeoutError",
        "message": f"Execution timed out after {timeout_ms}ms",
    }
    await act.write([act.event(EventType.WAIT_TIMED_OUT, {"error": error}, key)])
    record.done, record.success, record.error = True, False, error
    raise WorkflowTimeoutError(error["message"])


def _match_problem(match: object) -> str | None:
    if not isinstance(match, Mapping) or not match:
        return "give a non-empty dict of the payload's key/value pairs"
    try:
        orjson.dumps(match)
    except TypeError as exc:
        return f"not JSON: {exc}"
    return None
