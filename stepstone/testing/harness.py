"""Run workflows in-process on a fresh in-memory store with a fake clock.

The harness is the real engine (storage, operations, a worker, the replay step) with two
changes: time moves only when the test says (``advance``), and step bodies can be replaced by
name (``mock_step``, ``fail_step``) without touching the workflow's code. Replacing a body
keeps everything else real: the attempt, its retries and the recorded output are the engine's.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from stepstone.authoring.durations import parse_duration
from stepstone.authoring.entrypoint import WorkflowEntrypoint
from stepstone.cron import CronScheduler, next_fire_ms
from stepstone.embedded import Engine, InstanceHandle
from stepstone.engine.clock import ManualClock
from stepstone.engine.replay import ReplayStep
from stepstone.engine.worker import Worker, WorkerSettings
from stepstone.loader import load_version
from stepstone.model import history as h
from stepstone.project import ProjectConfig, find_project_file
from stepstone.storage.base import VersionRecord

# 2026-01-01T00:00:00Z: a fixed start, so what a test sees does not depend on when it runs.
DEFAULT_START_MS = 1_767_225_600_000
# Real time allowed for what became due to run; only a step body that really blocks uses it.
SETTLE_TIMEOUT_S = 30.0
# An idle look must repeat this many times before the harness believes nothing will start.
QUIET_LOOKS = 3
# Due times one advance may pass through before the harness suspects a runaway timer loop.
MAX_STOPS = 100_000

Duration = int | str | timedelta


class HarnessError(AssertionError):
    """A harness call the test got wrong (an unknown step, work that never settles)."""


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptView:
    number: int
    success: bool | None
    error: dict[str, Any] | None
    start: int
    end: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class StepView:
    """One step as recorded: ``name`` is the visible name (``charge payment-1``)."""

    kind: str
    name: str
    done: bool
    success: bool | None
    output: Any
    error: dict[str, Any] | None
    attempts: list[AttemptView]
    wake_at: int | None

    @property
    def base_name(self) -> str:
        return self.name.rpartition("-")[0]


@dataclasses.dataclass(slots=True)
class _Override:
    """What runs instead of a step body: a value, a function of ctx, or failures first."""

    value: Any = None
    function: Callable[[dict[str, Any]], Any] | None = None
    replace: bool = False
    failures: int = 0
    error: BaseException | Callable[[], BaseException] | None = None
    calls: int = 0


class HarnessInstance:
    """An instance created through the harness; every call settles the engine first."""

    def __init__(self, harness: WorkflowHarness, handle: InstanceHandle, workflow: str) -> None:
        self.harness = harness
        self.handle = handle
        self.workflow = workflow
        self.id = handle.id

    def __repr__(self) -> str:
        return f"HarnessInstance({self.workflow!r}, {self.id!r})"

    async def status(self) -> dict[str, Any]:
        """``{status, error, output, rollback}``, as ``InstanceHandle.status`` answers."""
        await self.harness.settle()
        return await self.handle.status()

    async def output(self) -> Any:
        return (await self.status())["output"]

    async def send_event(self, type: str, payload: Any = None) -> None:
        await self.handle.send_event(type=type, payload=payload)
        await self.harness.settle()

    async def pause(self) -> None:
        await self.handle.pause()
        await self.harness.settle()

    async def resume(self) -> None:
        await self.handle.resume()
        await self.harness.settle()

    async def terminate(self, *, rollback: bool = False) -> None:
        await self.handle.terminate(rollback=rollback)
        await self.harness.settle()

    async def restart(self, from_: Mapping[str, Any] | None = None) -> None:
        await self.handle.restart(from_=from_)
        await self.harness.settle()

    async def history(self) -> h.InstanceHistory:
        await self.harness.settle()
        engine = self.harness.engine
        _, record = await engine.ops.instance(engine.project.account_id, self.workflow, self.id)
        return await engine.ops.history(record)

    async def steps(self) -> list[StepView]:
        """Every step in the order it was first recorded (rollbacks included)."""
        return [_view(record) for record in (await self.history()).ordered()]

    async def step(self, name: str, kind: str | None = None) -> StepView:
        """The step called ``name`` (``"ship"`` means its first call, ``"ship-2"`` the
        second); ``kind`` (do, sleep, waitForEvent, rollback) picks among equal names."""
        steps = await self.steps()
        for wanted in (name, f"{name}-1"):
            for view in steps:
                if view.name == wanted and (kind is None or view.kind == kind):
                    return view
        known = ", ".join(f"{v.kind} {v.name!r}" for v in steps) or "none"
        raise HarnessError(f"no step {name!r} in {self!r}; recorded: {known}")

    async def run_to_end(self, limit: Duration = "366 days") -> dict[str, Any]:
        """Advance the clock from due time to due time until the instance ends or is
        paused, at most ``limit`` ahead; a wait for an event on the way times out."""
        harness = self.harness
        until = harness.clock.now_ms() + _ms(limit)
        for _ in range(MAX_STOPS):
            status = await self.status()
            if status["status"] in ("complete", "errored", "terminated", "paused"):
                return status
            due = await harness.next_due_at()
            if due is None or due > until:
                return status
            harness.clock.advance(max(0, due - harness.clock.now_ms()))
        raise HarnessError(f"{self!r} did not end within {MAX_STOPS} timers")


class WorkflowHarness:
    """The engine in this process, on ``memory://``, driven by a fake clock.

    Open it with ``async with await WorkflowHarness.open(config=...)`` or register classes
    with ``register``. Nothing waits in real time for a workflow's sleeps, retry delays or
    event timeouts: ``advance`` moves the clock and runs what became due before returning.
    """

    def __init__(self, engine: Engine, clock: ManualClock) -> None:
        self.engine = engine
        self.clock = clock
        self._overrides: dict[tuple[str | None, str], _Override] = {}
        self._wrapped: dict[type[WorkflowEntrypoint], type[WorkflowEntrypoint]] = {}
        self._classes: dict[tuple[str, str], type[WorkflowEntrypoint]] = {}
        worker = Worker(
            engine.storage,
            self._load,
            lambda workflow: engine.env(),
            settings=WorkerSettings(poll_ms=50),
            clock=clock,
        )
        # Cron schedules fire on the fake clock too, each at its own time (see advance).
        self._cron = CronScheduler(engine.storage, clock=clock)

        def changed() -> None:
            worker.invalidate_workflows()
            self._cron.invalidate()

        engine.ops.on_workflows_changed = changed
        engine.worker = worker

    @classmethod
    async def open(
        cls,
        config: str | Path | ProjectConfig | None = None,
        *,
        start: int | None = None,
        env: Mapping[str, Any] | None = None,
        url: str = "memory://",
    ) -> WorkflowHarness:
        """``config``: a stepstone.toml, a wrangler file or its folder, or nothing (then
        ``register`` the classes). ``start``: the fake clock's epoch ms. ``url``: another
        store than a fresh in-memory one, e.g. a SQLite file that keeps the histories the
        test made (for ``stepstone replay``)."""
        if isinstance(config, Path | str):
            config = _project_file(Path(config))
        clock = ManualClock(DEFAULT_START_MS if start is None else start)
        engine = await Engine.open(
            url, config=config, run_worker=False, clock=clock, env=env, check_importable=True
        )
        if engine.ops.unloadable:
            await engine.close()
            problems = "; ".join(f"{name}: {why}" for name, why in engine.ops.unloadable.items())
            raise HarnessError(f"the config's workflows cannot be imported: {problems}")
        # Classes given to register() need not be importable by module path.
        engine.ops.check_importable = False
        harness = cls(engine, clock)
        assert engine.worker is not None
        await engine.worker.start()
        return harness

    async def close(self) -> None:
        await self.engine.close()

    async def __aenter__(self) -> WorkflowHarness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- workflows and instances ------------------------------------------------------------

    async def register(self, name: str, workflow_class: type[WorkflowEntrypoint]) -> None:
        """Run ``workflow_class`` as workflow ``name`` (it need not be importable by path)."""
        key = (workflow_class.__module__, workflow_class.__qualname__)
        self._classes[key] = workflow_class
        await self.engine.register(name, workflow_class)

    async def create(
        self, workflow: str, params: Any = None, *, id: str | None = None
    ) -> HarnessInstance:
        """Create an instance and run it until it ends or waits."""
        options: dict[str, Any] = {"params": params}
        if id is not None:
            options["id"] = id
        handle = await self.engine.workflow(workflow).create(**options)
        await self.settle()
        return HarnessInstance(self, handle, workflow)

    async def get(self, workflow: str, id: str) -> HarnessInstance:
        return HarnessInstance(self, await self.engine.workflow(workflow).get(id), workflow)

    # --- time -------------------------------------------------------------------------------

    def now(self) -> int:
        return self.clock.now_ms()

    async def advance(self, duration: Duration) -> None:
        """Move the clock by ``duration`` ("3 days", ms, a timedelta) and run what became
        due: sleeps that end, retries whose delay passed, waits that time out."""
        await self.advance_to(self.clock.now_ms() + _ms(duration))

    async def advance_to(self, target_ms: int) -> None:
        """Move the clock to ``target_ms`` (epoch ms) as time would pass: from one due time
        to the next (a timer, a retry, a cron firing), running what each makes due, so that a
        step retried every 10 minutes is retried every 10 minutes of a 3-day advance."""
        await self.settle()
        for _ in range(MAX_STOPS):
            due = await self.next_due_at()
            if due is None or due > target_ms:
                break
            self.clock.advance(max(0, due - self.clock.now_ms()))
            await self.settle()
        else:
            raise HarnessError(
                f"more than {MAX_STOPS} timers fire in this advance; advance by less at a time"
            )
        self.clock.advance(max(0, target_ms - self.clock.now_ms()))
        await self.settle()

    async def next_wake_at(self) -> int | None:
        """When the next timer of any instance fires (epoch ms), or None."""
        records, _ = await self.engine.storage.list_workflows(None, None, 0, 1_000_000)
        return await self.engine.storage.next_wake_at([r.pk for r in records])

    async def next_due_at(self) -> int | None:
        """The next time anything happens: an instance's timer or a cron firing."""
        records, _ = await self.engine.storage.list_workflows(None, None, 0, 1_000_000)
        now = self.clock.now_ms()
        times = [next_fire_ms(cron, now) for r in records for cron in r.version.schedules]
        wake = await self.engine.storage.next_wake_at([r.pk for r in records])
        if wake is not None:
            times.append(wake)
        return min(times, default=None)

    async def settle(self) -> None:
        """Return once no activation runs and nothing is due at the clock's time."""
        worker = self.engine.worker
        assert worker is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT_S
        quiet = 0
        await self._cron.tick()
        while quiet < QUIET_LOOKS:
            if loop.time() > deadline:
                raise HarnessError(
                    f"the engine did not settle within {SETTLE_TIMEOUT_S:.0f} s of real time "
                    "(a step body that blocks or never returns?)"
                )
            worker.wake()
            for _ in range(5):
                await asyncio.sleep(0)
            if worker.active_count:
                quiet = 0
                # A step body in a thread or real I/O needs real time; the loop stays free.
                await asyncio.sleep(0.001)
                continue
            wake = await self.next_wake_at()
            if wake is not None and wake <= self.clock.now_ms():
                quiet = 0
                await asyncio.sleep(0)
                continue
            quiet += 1

    # --- step overrides ---------------------------------------------------------------------

    def mock_step(
        self,
        name: str,
        result: Any = None,
        *,
        function: Callable[[dict[str, Any]], Any] | None = None,
        workflow: str | None = None,
    ) -> None:
        """Every ``step.do(name)`` returns ``result`` (or ``function(ctx)``) instead of
        running its body; the engine records it as the step's output."""
        self._overrides[(workflow, name)] = _Override(value=result, function=function, replace=True)

    def fail_step(
        self,
        name: str,
        error: BaseException | Callable[[], BaseException] | None = None,
        *,
        times: int = 1,
        workflow: str | None = None,
    ) -> None:
        """The next ``times`` attempts of ``step.do(name)`` raise ``error`` (a
        ``RuntimeError`` by default) before the body runs; later attempts run the body.
        The step's own retry config decides what follows, as for a real failure."""
        self._overrides[(workflow, name)] = _Override(failures=times, error=error)

    def clear_overrides(self) -> None:
        self._overrides.clear()

    def step_calls(self, name: str, workflow: str | None = None) -> int:
        """How many attempts of a mocked or failed step were made."""
        override = self._overrides.get((workflow, name))
        return 0 if override is None else override.calls

    def _override(self, workflow: str, name: str) -> _Override | None:
        return self._overrides.get((workflow, name)) or self._overrides.get((None, name))

    def _load(self, version: VersionRecord) -> type[WorkflowEntrypoint]:
        cls = self._classes.get((version.script_name, version.class_name))
        if cls is None:
            cls = load_version(version)
        wrapped = self._wrapped.get(cls)
        if wrapped is None:
            wrapped = self._wrap(cls)
            self._wrapped[cls] = wrapped
        return wrapped

    def _wrap(self, cls: type[WorkflowEntrypoint]) -> type[WorkflowEntrypoint]:
        harness = self

        async def run(entry: Any, event: Any, step: Any) -> Any:
            if isinstance(step, ReplayStep):
                harness._intercept(step)
            return await cls.run(entry, event, step)

        return type(cls.__name__, (cls,), {"run": run, "__qualname__": cls.__qualname__})

    def _intercept(self, step: ReplayStep) -> None:
        """Route the step's bodies through the overrides: ``run_do`` is where every form of
        ``step.do`` (decorator, direct call, legacy signature, sagas) gets its body."""
        original = step.run_do
        workflow = step.activation.workflow_name

        async def run_do(name: str, call: Callable[[dict[str, Any]], Any], **options: Any) -> Any:
            override = self._override(workflow, name)
            if override is not None:
                call = _overridden(override, call, name)
            return await original(name, call, **options)

        setattr(step, "run_do", run_do)  # noqa: B010 (an instance's method, replaced)


def _overridden(
    override: _Override, call: Callable[[dict[str, Any]], Any], name: str
) -> Callable[[dict[str, Any]], Any]:
    async def body(ctx: dict[str, Any]) -> Any:
        override.calls += 1
        if override.failures > 0:
            override.failures -= 1
            error = override.error
            if error is None:
                raise RuntimeError(f'failure injected into step "{name}" by the test harness')
            raise error if isinstance(error, BaseException) else error()
        if override.replace:
            if override.function is not None:
                result = override.function(ctx)
                return await result if asyncio.iscoroutine(result) else result
            return override.value
        result = call(ctx)
        return await result if asyncio.iscoroutine(result) or asyncio.isfuture(result) else result

    return body


def _project_file(path: Path) -> Path:
    if not path.is_dir():
        return path
    found = find_project_file(path)
    if found is None:
        raise HarnessError(f"no stepstone.toml or wrangler file in {path}")
    return found


def _ms(duration: Duration) -> int:
    return parse_duration(duration)


def _view(record: h.StepRecord) -> StepView:
    output: Any = None
    if record.output is not None:
        output = orjson.loads(record.output)
    elif record.event is not None:
        output = record.event
    return StepView(
        kind=record.kind,
        name=record.name,
        done=record.done,
        success=record.success,
        output=output,
        error=record.error,
        attempts=[
            AttemptView(a.attempt, a.success, a.error, a.start, a.end) for a in record.attempts
        ],
        wake_at=record.wake_at,
    )
