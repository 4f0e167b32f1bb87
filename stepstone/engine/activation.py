"""One activation: replay ``run()`` for a claimed instance until it ends or must wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from stepstone.authoring.entrypoint import WorkflowEntrypoint, WorkflowEvent
from stepstone.engine.clock import Clock
from stepstone.engine.errors_codec import encode_error
from stepstone.engine.holding import holding
from stepstone.engine.payloads import MAX_JSON_BYTES, encode_json
from stepstone.engine.pending_results import PendingResults
from stepstone.engine.replay import ReplayStep
from stepstone.engine.signals import InstanceFailed, LeaseLost, StoreLost
from stepstone.model import history as h
from stepstone.model.events import EventType
from stepstone.model.statuses import Status
from stepstone.observability.probes import ActivationProbe
from stepstone.storage.base import Claim, DeliveredEvent, NewEvent, Release, Storage

DEFAULT_STEP_LIMIT = 10_000
DEFAULT_STORAGE_CAP = 1 << 30
# Turns of the event loop an idle activation waits before dropping its coroutine, so that
# branches of an asyncio.gather that are about to start a step get to do so.
IDLE_CONFIRM_TURNS = 5
TERMINATE_REPLAY_TIMEOUT_S = 10.0
# How long a cancelled activation waits for the user's code to unwind (a finally block, an
# except CancelledError doing cleanup) before giving up on it.
STOP_GRACE_S = 5.0
TERMINATION_ERROR = {"name": "WorkflowTerminated", "message": "Instance terminated"}


@dataclass(frozen=True, slots=True)
class _Returned:
    value: Any


@dataclass(frozen=True, slots=True)
class _Raised:
    error: BaseException


@dataclass(frozen=True, slots=True)
class _Suspended:
    wake_at: int


class Activation:
    """One run of ``run()`` for a claimed instance, and the host its step object works in
    (``step_host.StepHost``)."""

    def __init__(
        self,
        storage: Storage,
        claim: Claim,
        clock: Clock,
        entry: WorkflowEntrypoint,
        workflow_name: str,
        *,
        step_limit: int | None = None,
        storage_cap: int = DEFAULT_STORAGE_CAP,
        implicit_dependencies: bool = True,
    ) -> None:
        self.storage = storage
        self.claim = claim
        self.clock = clock
        self.entry = entry
        self.workflow_name = workflow_name
        self.step_limit = step_limit or DEFAULT_STEP_LIMIT
        self.storage_cap = storage_cap
        # Cloudflare's python_workflows_implicit_dependencies flag: False gives step.do the
        # legacy signature step.do(name, depends=[...], concurrent=False, config=None).
        self.implicit_dependencies = implicit_dependencies
        self.history = h.InstanceHistory()
        self.unrequested: set[tuple[str, str]] = set()
        self._executing = 0
        self.pause_pending = claim.instance.status == Status.WAITING_FOR_PAUSE
        # Set by a worker shutting down: like a pause, no new step starts.
        self.draining = False
        self.replay_only = False
        # Set while (or if) the user's code outlives the cancellation of this activation.
        self.lingering = False
        self._parked: list[int | None] = []
        self._idle = asyncio.Event()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._order = 0
        self._held = PendingResults(self._record)

    # --- what the replay step uses ----------------------------------------------------------

    @property
    def executing(self) -> int:
        """Calls of the step API doing work now (parked ones do not count)."""
        return self._executing

    @executing.setter
    def executing(self, value: int) -> None:
        self._executing = value
        # Whichever call brings it to 0 (one parking, or a step ending beside a parked one),
        # the drive loop must look again: the activation may now end and wait.
        if value == 0 and self._parked:
            self._idle.set()

    def now(self) -> int:
        return self.clock.now_ms()

    def event(
        self,
        kind: str,
        data: dict[str, Any],
        key: tuple[str, str] | None,
        ts: int | None = None,
    ) -> NewEvent:
        return NewEvent(
            kind,
            self.now() if ts is None else ts,
            orjson.dumps(data),
            None if key is None else key[0],
            None if key is None else key[1],
        )

    @property
    def holds_new_steps(self) -> bool:
        return self.pause_pending or self.draining

    def next_order(self) -> int:
        self._order += 1
        return 1 << 50 | self._order

    async def write(self, events: Sequence[NewEvent]) -> None:
        await self._record([*await self._held.take(), *events])

    def write_nowait(self, events: Sequence[NewEvent]) -> None:
        if self._held.busy:
            self._held.queue(events)  # behind the held result, in order
        else:
            self.storage.record_progress_nowait(self.claim, events)

    def hold(self, events: Sequence[NewEvent]) -> None:
        self._held.hold(events)

    async def settle(self) -> None:
        await self._held.settle()

    async def _record(self, events: Sequence[NewEvent]) -> None:
        with holding():
            current = await self.storage.record_progress(self.claim, events)
        self.pause_pending = current == Status.WAITING_FOR_PAUSE

    async def consume_event(self, event_type: str, completion: NewEvent) -> DeliveredEvent | None:
        await self.settle()
        with holding():
            return await self.storage.consume_event(self.claim, event_type, completion)

    async def store_stream(
        self, step_name: str, chunks: AsyncIterator[bytes], form: str
    ) -> dict[str, Any]:
        total = 0
        count = 0
        async for chunk in chunks:
            total += len(chunk)
            if self.history.stream_bytes + total > self.storage_cap:
                raise InstanceFailed(
                    "WorkflowFatalError",
                    f"Step {step_name} exceeded the instance storage limit of "
                    f"{self.storage_cap} bytes",
                )
            with holding():
                await self.storage.record_stream_chunk(self.claim, step_name, count, chunk)
            count += 1
        self.history.stream_bytes += total
        return {"bytes": total, "chunks": count, "form": form}

    def read_stream(self, step_name: str, chunks: int) -> AsyncIterator[bytes]:
        return self.storage.read_stream(self.claim.instance.pk, step_name, chunks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def park(self, wake_at: int | None) -> None:
        """Wait until the activation ends; ``wake_at`` None waits for a resume."""
        self._parked.append(wake_at)
        self.executing -= 1
        try:
            await asyncio.Future()
        finally:
            self.executing += 1

    # --- the activation ---------------------------------------------------------------------

    async def run(self) -> Release:
        instance = self.claim.instance
        if instance.status == Status.WAITING_FOR_PAUSE:
            return Release(Status.PAUSED)
        events = self.claim.history
        if events is None:
            events = await self.storage.load_events(instance.pk)
        self.history = h.fold(events)
        probe = ActivationProbe(
            self.workflow_name, instance, events, self.claim.epoch, self.history, self.now()
        )
        self.unrequested = {k for k in self.history.steps if k[0] != h.ROLLBACK}
        if self.history.started_at is None:
            self.write_nowait([self.event(EventType.WORKFLOW_STARTED, {}, None)])
        step = ReplayStep(self)
        try:
            if instance.control == "terminate_rollback":
                release = await self._terminate_with_rollback(step)
            else:
                outcome = await self._drive(self.entry.run(self._workflow_event(), step))
                release = await self._finish(step, outcome)
        except InstanceFailed as failed:
            release = self._failed(failed.error)
        except BaseException:
            self._held.drop()
            raise
        finally:
            await self._stop_tasks()
            probe.end()
        held = await self._held.take()
        return replace(release, events=[*held, *release.events]) if held else release

    async def _stop_tasks(self) -> None:
        """Cancel what still runs of the user's code and wait (bounded) until it has ended.

        When the worker cancels this activation (terminate, restart, delete) the user's
        coroutine gets ``CancelledError`` at its next await; the worker hands the instance
        back only after that, so a new activation never overlaps this one. Code that ignores
        the cancellation past ``STOP_GRACE_S`` leaves ``lingering`` set: the instance then
        waits for its lease to expire instead.
        """
        pending = [task for task in self._tasks if not task.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        self.lingering = True
        _, still = await asyncio.wait(pending, timeout=STOP_GRACE_S)
        self.lingering = bool(still)

    def _workflow_event(self) -> WorkflowEvent:
        instance = self.claim.instance
        return WorkflowEvent(
            payload=orjson.loads(instance.params),
            timestamp=datetime.fromtimestamp(instance.created_on / 1000, UTC),
            instance_id=instance.id,
            workflow_name=self.workflow_name,
            schedule=orjson.loads(instance.schedule) if instance.schedule else None,
        )

    async def _drive(self, coro: Coroutine[Any, Any, Any]) -> _Returned | _Raised | _Suspended:
        self._parked.clear()
        self._idle.clear()
        task = self.spawn(coro)
        while True:
            idle = asyncio.ensure_future(self._idle.wait())
            try:
                await asyncio.wait({task, idle}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                idle.cancel()
            if task.done():
                break
            for _ in range(IDLE_CONFIRM_TURNS):
                await asyncio.sleep(0)
            if self.executing == 0 and self._parked and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                now = self.now()
                return _Suspended(min(now if w is None else w for w in self._parked))
            self._idle.clear()
        error = task.exception()
        if error is None:
            return _Returned(task.result())
        if isinstance(error, LeaseLost | StoreLost | InstanceFailed):
            raise error
        return _Raised(error)

    async def _finish(self, step: ReplayStep, outcome: _Returned | _Raised | _Suspended) -> Release:
        now = self.now()
        if isinstance(outcome, _Suspended):
            return Release(
                Status.WAITING,
                runnable_at=outcome.wake_at,
                events=[self.event(EventType.WORKFLOW_WAITING, {}, None)],
            )
        if isinstance(outcome, _Returned):
            try:
                output = encode_json(outcome.value, "run()")
                if len(output) > MAX_JSON_BYTES:
                    raise InstanceFailed(
                        "WorkflowFatalError", "The value returned from run() is over 1MiB"
                    )
            except InstanceFailed as failed:
                return self._failed(failed.error)
            data = b'{"output":' + output + b"}"
            return Release(
                Status.COMPLETE,
                output=output,
                events=[NewEvent(EventType.WORKFLOW_COMPLETED, now, data)],
            )
        if not isinstance(outcome.error, Exception):
            raise outcome.error
        error = encode_error(outcome.error)
        if not step.eligible_rollbacks():
            return self._failed(error)
        rolled = await self._rollback(step, error)
        if isinstance(rolled, Release):
            return rolled
        return Release(
            Status.ERRORED,
            error=orjson.dumps(error),
            rollback=orjson.dumps(rolled),
            events=[self.event(EventType.WORKFLOW_ERRORED, {"error": error}, None)],
        )

    def _failed(self, error: dict[str, Any]) -> Release:
        return Release(
            Status.ERRORED,
            error=orjson.dumps(error),
            events=[self.event(EventType.WORKFLOW_ERRORED, {"error": error}, None)],
        )

    async def _rollback(
        self, step: ReplayStep, trigger: dict[str, Any]
    ) -> dict[str, Any] | Release:
        """Run the rollback phase; a Release means it must wait (a retry delay) first."""
        # A terminate sets rollingBack before any activation runs, so the status cannot say
        # whether this phase was already announced; the record can.
        if not self.history.rollback_started:
            total = len(step.eligible_rollbacks())
            await self.write(
                [
                    self.event(
                        EventType.ROLLBACK_STARTED,
                        {"triggerError": trigger, "totalSteps": total},
                        None,
                    )
                ]
            )
        await self._set_status(Status.ROLLING_BACK)
        result = await self._drive(step.run_rollbacks(trigger))
        if isinstance(result, _Suspended):
            return Release(Status.ROLLING_BACK, runnable_at=result.wake_at)
        if isinstance(result, _Raised):
            raise result.error
        outcome: dict[str, Any] = result.value
        kind = (
            EventType.ROLLBACK_COMPLETED
            if outcome["outcome"] == "complete"
            else EventType.ROLLBACK_ERRORED
        )
        await self.write([self.event(kind, {"error": outcome["error"]}, None)])
        return outcome

    async def _set_status(self, status: str) -> None:
        await self.settle()
        with holding():
            await self.storage.set_active_status(self.claim, status)

    async def _terminate_with_rollback(self, step: ReplayStep) -> Release:
        # Replay without executing anything new, only to learn which rollbacks were registered.
        self.replay_only = True
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(TERMINATE_REPLAY_TIMEOUT_S):
                await self._drive(self.entry.run(self._workflow_event(), step))
        self.replay_only = False
        terminated = self.event(EventType.WORKFLOW_TERMINATED, {"trigger": {"source": "api"}}, None)
        rollback: dict[str, Any] | None = None
        if step.eligible_rollbacks():
            rolled = await self._rollback(step, TERMINATION_ERROR)
            if isinstance(rolled, Release):
                return rolled
            rollback = rolled
        return Release(
            Status.TERMINATED,
            rollback=None if rollback is None else orjson.dumps(rollback),
            events=[terminated],
        )
