"""Check recorded instances against the current code without running any step.

``run()`` is replayed over the folded record as an activation would replay it, with a step
object that only answers from the record: a recorded, finished step returns its recorded
result (or raises its recorded error); the first step the record has not finished (new work, a
sleep not over, an event not yet delivered) parks its branch, as an activation parks when it
must wait. Nothing is written: the activation used here refuses every write, holds no claim,
and reads only the events (and byte streams) it is given.

A divergence is anything by which the code now disagrees with the record: a step asked for
that the record lacks while a recorded one is left unasked (the engine fails such an instance
with NondeterminismError), a recorded step the code no longer asks for, or a different end
(a recorded completion whose run now returns another value, raises, or asks for more steps).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import orjson

from stepstone.authoring.entrypoint import WorkflowEntrypoint
from stepstone.engine.activation import Activation, _Raised, _Returned, _Suspended
from stepstone.engine.clock import ManualClock
from stepstone.engine.compensation import Compensation
from stepstone.engine.errors_codec import encode_error
from stepstone.engine.payloads import recorded_result
from stepstone.engine.recorded import RecordedInstance
from stepstone.engine.replay import ReplayStep, describe_step
from stepstone.engine.signals import InstanceFailed
from stepstone.engine.waits import wait_result
from stepstone.model import history as h
from stepstone.model.statuses import TERMINAL, Status
from stepstone.storage.base import Claim, InstanceRecord, Storage

# Bounds a run() that awaits something other than steps (real I/O between steps).
CHECK_TIMEOUT_S = 10.0
OWNER = "stepstone-replay-check"


class CheckEnv:
    """``self.env`` during a check: the configured values; a binding is refused, since code
    outside steps must not act on other instances (and a check must change nothing)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        if key in self._values:
            return self._values[key]
        raise KeyError(f"{key!r}: a replay check offers the configured values only")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._values:
            return self._values[name]
        raise AttributeError(f"{name!r}: a replay check offers the configured values only")

    def __contains__(self, key: object) -> bool:
        return key in self._values


class _WriteRefused(BaseException):
    """The check tried to write: a bug in the checker, never the workflow's failure."""


@dataclass(frozen=True, slots=True)
class ReplayVerdict:
    """What replaying one recorded instance against the code found.

    ``agrees`` is False on any divergence; ``divergence`` says where it first diverges and
    ``fails_instance`` whether the engine itself would fail the instance there
    (NondeterminismError) rather than carry on. ``next_steps`` are the steps the code would
    run (or wait on) next; ``replayed`` counts recorded steps answered from the record.
    """

    workflow: str
    instance: str
    status: str
    agrees: bool
    divergence: str | None = None
    step: str | None = None
    fails_instance: bool = False
    replayed: int = 0
    next_steps: list[str] = field(default_factory=list)
    outcome: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "instance": self.instance,
            "status": self.status,
            "agrees": self.agrees,
            "divergence": self.divergence,
            "step": self.step,
            "failsInstance": self.fails_instance,
            "replayed": self.replayed,
            "nextSteps": self.next_steps,
            "outcome": self.outcome,
        }


class _CheckActivation(Activation):
    """An activation that reads only what it was given and refuses to write."""

    def __init__(
        self,
        item: RecordedInstance,
        entry: WorkflowEntrypoint,
        *,
        storage: Storage | None,
        implicit_dependencies: bool,
        step_limit: int | None,
    ) -> None:
        last_ts = max((e.ts for e in item.events), default=item.created_on)
        record = InstanceRecord(
            pk=item.pk or 0,
            workflow_pk=0,
            id=item.id,
            version_id="",
            status=item.status,
            trigger_source="replay-check",
            params=item.params,
            schedule=item.schedule,
            created_on=item.created_on,
            modified_on=last_ts,
            started_on=None,
            ended_on=None,
            output=item.output,
            error=item.error,
            rollback=None,
            control=None,
            paused_at=None,
            success_retention_ms=None,
            error_retention_ms=None,
        )
        super().__init__(
            storage,  # type: ignore[arg-type]  # only read_stream below may use it
            Claim(record, OWNER, 0, 0),
            ManualClock(last_ts),
            entry,
            item.workflow,
            step_limit=step_limit,
            implicit_dependencies=implicit_dependencies,
        )
        self.item = item
        self.history = h.fold(item.events)
        self.unrequested = {k for k in self.history.steps if k[0] != h.ROLLBACK}
        self.answered: set[tuple[str, str]] = set()
        self.frontier: list[str] = []
        self.mismatch: tuple[str, str] | None = None

    async def write(self, events: Any) -> None:
        raise _WriteRefused("write")

    def write_nowait(self, events: Any) -> None:
        raise _WriteRefused("write")

    def hold(self, events: Any) -> None:
        raise _WriteRefused("write")

    async def settle(self) -> None:
        """Nothing is ever held: every write is refused."""

    async def consume_event(self, event_type: str, completion: Any) -> Any:
        raise _WriteRefused("consume_event")

    async def store_stream(self, step_name: str, chunks: Any, form: str) -> dict[str, Any]:
        raise _WriteRefused("store_stream")

    async def _set_status(self, status: str) -> None:
        raise _WriteRefused("set_status")

    def read_stream(self, step_name: str, chunks: int) -> AsyncIterator[bytes]:
        if step_name in self.item.streams:
            return _iterate(self.item.streams[step_name][:chunks])
        if self.storage is None or self.item.pk is None:
            raise InstanceFailed(
                "ReplayCheckError",
                f'the byte stream of step "{step_name}" is not in the exported history',
            )
        return self.storage.read_stream(self.item.pk, step_name, chunks)

    async def check(self) -> _Returned | _Raised | _Suspended:
        step = _CheckStep(self)
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await self._drive(self.entry.run(self._workflow_event(), step))


async def _iterate(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


class _CheckStep(ReplayStep):
    """The step object of a check: recorded answers only, never any work."""

    activation: _CheckActivation

    async def run_do(
        self,
        name: str,
        call: Callable[[dict[str, Any]], Any],
        *,
        config: Any,
        rollback: Callable[..., Any] | None,
        rollback_config: Any,
        saga: Any = None,
    ) -> Any:
        key, count = self._begin(h.DO, name)
        record = await self._recorded(key)
        if saga is not None:
            # step.rollback_all() undoes the started with_rollback steps: their recorded
            # undo results steer run() as they did, so the check must know them too.
            entry = Compensation(key, saga, None, {"step": {"name": name, "count": count}})
            if record is not None:
                entry.observe(record)
            self.sagas.append(entry)
        if record is not None and record.done:
            return await recorded_result(self.activation, record)
        await self._frontier(key)

    async def _compensate(
        self, entry: Compensation, done: h.StepRecord | None, call: Callable[[dict[str, Any]], Any]
    ) -> None:
        """An undo the record has not finished: the run would do that work next."""
        await self._frontier((h.ROLLBACK, entry.key[1]))

    async def wait_for_event(
        self, name: str, event_type: str, /, timeout: Any = "24 hours", *, match: Any = None
    ) -> dict[str, Any]:
        key, _ = self._begin(h.WAIT, name)
        record = await self._recorded(key)
        if record is not None and record.done:
            return wait_result(record)
        if record is not None and record.event_type not in (None, event_type):
            self.activation.mismatch = (
                f"{describe_step(key)} waits for events of type {event_type!r} where the record"
                f" waits for {record.event_type!r}",
                describe_step(key),
            )
        await self._frontier(key)

    async def _sleep(
        self, name: str, compute_wake: Callable[[int], int], duration_ms: int | None
    ) -> None:
        key, _ = self._begin(h.SLEEP, name)
        record = await self._recorded(key)
        if record is not None and record.done:
            return
        await self._frontier(key)

    async def _recorded(self, key: tuple[str, str]) -> h.StepRecord | None:
        await self._check_replay_order(key)
        record = self.activation.history.steps.get(key)
        if record is not None and record.done:
            self.activation.answered.add(key)
        return record

    async def _frontier(self, key: tuple[str, str]) -> NoReturn:
        act = self.activation
        act.frontier.append(describe_step(key))
        act.executing += 1
        try:
            await act.park(None)
        finally:
            act.executing -= 1
        raise AssertionError("unreachable")  # pragma: no cover


async def check_instance(
    item: RecordedInstance,
    entry_class: type[WorkflowEntrypoint],
    *,
    env: Any = None,
    storage: Storage | None = None,
    step_limit: int | None = None,
) -> ReplayVerdict:
    """Replay ``item`` against ``entry_class``; ``storage`` serves byte streams not in it."""
    entry = entry_class(None, CheckEnv({}) if env is None else env)
    act = _CheckActivation(
        item,
        entry,
        storage=storage,
        implicit_dependencies=getattr(entry_class, "__stepstone_implicit_dependencies__", True),
        step_limit=step_limit,
    )

    def verdict(divergence: str | None = None, **more: Any) -> ReplayVerdict:
        return ReplayVerdict(
            workflow=item.workflow,
            instance=item.id,
            status=item.status,
            agrees=divergence is None,
            divergence=divergence,
            replayed=len(act.answered),
            next_steps=list(act.frontier),
            **more,
        )

    try:
        outcome = await act.check()
    except InstanceFailed as failed:
        name = failed.error.get("name", "")
        return verdict(
            str(failed.error.get("message")),
            # An ended instance never runs again: the engine fails only one under way.
            fails_instance=name == "NondeterminismError" and item.status not in TERMINAL,
            outcome=f"fails: {name}",
        )
    except TimeoutError:
        return verdict(
            f"run() did not reach a step or an end within {CHECK_TIMEOUT_S:.0f} s (it awaits"
            " something other than steps?)",
            outcome="timed out",
        )
    finally:
        with contextlib.suppress(Exception):
            await act._stop_tasks()
    described = _outcome(outcome)
    if act.mismatch is not None:
        return verdict(act.mismatch[0], step=act.mismatch[1], outcome=described)
    left = sorted(
        (act.history.steps[k] for k in act.unrequested if k not in act.answered),
        key=lambda s: s.first_event_id,
    )
    # Requested-but-unfinished steps left the unrequested set too (in _begin).
    if left:
        missing = describe_step((left[0].kind, left[0].name))
        return verdict(
            f"the code no longer asks for the recorded {missing}"
            + (f" (it asks for {act.frontier[0]} instead)" if act.frontier else ""),
            step=missing,
            outcome=described,
        )
    end = _compare_end(item, outcome, act)
    if end is not None:
        return verdict(end, outcome=described)
    return verdict(outcome=described)


def _outcome(outcome: _Returned | _Raised | _Suspended) -> str:
    if isinstance(outcome, _Returned):
        return "returns"
    if isinstance(outcome, _Raised):
        return f"raises {type(outcome.error).__name__}"
    return "waits"


def _compare_end(
    item: RecordedInstance, outcome: _Returned | _Raised | _Suspended, act: _CheckActivation
) -> str | None:
    """How the replayed end disagrees with a recorded one, or None."""
    if item.status == Status.COMPLETE:
        if isinstance(outcome, _Suspended):
            return f"the record completed, but the code now asks for {act.frontier[0]}"
        if isinstance(outcome, _Raised):
            return (
                f"the record completed, but run() now raises {type(outcome.error).__name__}:"
                f" {outcome.error}"
            )
        try:
            now = orjson.loads(orjson.dumps(outcome.value))
        except TypeError:
            return "run() now returns a value that cannot be stored"
        recorded = None if item.output is None else orjson.loads(item.output)
        if now != recorded:
            return f"run() now returns {_short(now)} where the record has {_short(recorded)}"
        return None
    if item.status == Status.ERRORED:
        recorded = None if item.error is None else orjson.loads(item.error)
        if isinstance(outcome, _Suspended):
            return f"the record errored, but the code now asks for {act.frontier[0]}"
        if isinstance(outcome, _Returned):
            return "the record errored, but run() now returns"
        error = encode_error(outcome.error) if isinstance(outcome.error, Exception) else None
        if error is None or not isinstance(recorded, dict):
            return None
        if (error["name"], error["message"]) != (recorded.get("name"), recorded.get("message")):
            return (
                f"run() now raises {error['name']}: {error['message']} where the record has"
                f" {recorded.get('name')}: {recorded.get('message')}"
            )
    return None


def _short(value: Any, limit: int = 200) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"
