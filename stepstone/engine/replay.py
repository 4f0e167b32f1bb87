"""The replay step: what ``run(event, step)`` calls.

Each call computes the step's visible name (``name-N``, counted per kind), looks it up in the
history loaded once for this activation, and either answers from the record or does the work
and records it. When the instance must wait (a sleep not due, an event not sent, a retry
delay, a pause) the call parks; once nothing is executing, the activation drops the coroutine
and the worker releases the instance with its wake-up time.

The step object names and orders the calls; the work is done beside it: a step.do's attempts
in ``attempts``, sleeps and waits for events in ``waits``, child workflows in ``children``,
rollbacks in ``compensation`` (its base class).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson

from stepstone.authoring.config import parse_rollback_config, resolve_config
from stepstone.engine import approvals, children, waits
from stepstone.engine.arguments import duration_argument
from stepstone.engine.attempts import Attempts
from stepstone.engine.callables import direct_call
from stepstone.engine.compensation import Compensation, Compensations
from stepstone.engine.payloads import recorded_json, recorded_result, stream_value
from stepstone.engine.python_api import (
    SagaStepFunction,
    StepFunction,
    check_depends,
    public_names,
)
from stepstone.engine.signals import InstanceFailed
from stepstone.engine.step_host import StepHost
from stepstone.errors import WorkflowFatalError
from stepstone.model import history as h
from stepstone.validation import event_type_problem, step_name_problem


class ReplayStep(Compensations):
    """The ``step`` object of one activation."""

    # step.do's signature depends on the activation's implicit_dependencies, as workerd's
    # SDK picks it from the python_workflows_implicit_dependencies flag.
    do: Callable[..., Any]

    def __init__(self, activation: StepHost) -> None:
        self.activation = activation
        self.implicit = activation.implicit_dependencies
        self.do = self._do_implicit if self.implicit else self._do_legacy
        self._counters: dict[tuple[str, str], int] = {}
        self._functions: dict[str, StepFunction] = {}
        self._do_count = 0
        self.rollbacks: list[Compensation] = []
        self.sagas: list[Compensation] = []
        self.in_rollback_phase = False
        self._undoing = False

    # --- public API -------------------------------------------------------------------------

    def _do_implicit(
        self,
        name: str | Callable[..., Any] | None = None,
        fn: Callable[..., Any] | None = None,
        *,
        config: Any = None,
        concurrent: bool = False,
        rollback: Callable[..., Any] | None = None,
        rollback_config: Any = None,
    ) -> Any:
        """``@step.do("name", config=...)`` decorates; ``await step.do("name", fn)`` runs."""
        options = {
            "config": config,
            "concurrent": concurrent,
            "rollback": rollback,
            "rollback_config": rollback_config,
        }
        if callable(name) and fn is None:  # bare @step.do
            return self._decorate(name.__name__, name, options)
        if fn is not None:
            if not isinstance(name, str):
                raise TypeError("step.do(name, fn): the name must be a string")
            return self.run_do(
                name,
                direct_call(fn),
                config=config,
                rollback=rollback,
                rollback_config=rollback_config,
            )

        def decorator(func: Callable[..., Any]) -> StepFunction:
            return self._decorate(name if isinstance(name, str) else func.__name__, func, options)

        return decorator

    def _do_legacy(
        self,
        name: str | Callable[..., Any],
        depends: Any = None,
        concurrent: bool = False,
        config: Any = None,
        *,
        rollback: Callable[..., Any] | None = None,
        rollback_config: Any = None,
    ) -> Any:
        """``@step.do(name, depends=[a, b], concurrent=False, config=None)``: the signature of
        Cloudflare's SDK without the implicit-dependencies flag. ``await step.do(name, fn)``
        still runs ``fn`` directly (a function is never a ``depends`` list)."""
        if callable(depends) and not isinstance(depends, StepFunction):
            return self._do_implicit(
                name, depends, config=config, rollback=rollback, rollback_config=rollback_config
            )
        options = {
            "config": config,
            "concurrent": concurrent,
            "rollback": rollback,
            "rollback_config": rollback_config,
            "depends": check_depends(depends),
            "legacy": True,
        }
        if callable(name):  # bare @step.do
            return self._decorate(name.__name__, name, options)
        if not isinstance(name, str):
            raise TypeError(f"step.do(): the name must be a string, not {type(name).__name__}")

        def decorator(func: Callable[..., Any]) -> StepFunction:
            return self._decorate(name, func, options)

        return decorator

    def with_rollback(self, name: str, config: Any = None) -> Callable[..., SagaStepFunction]:
        """``@step.with_rollback(name, config=None)``: a step whose ``@fn.undo`` compensation
        ``step.rollback_all()`` runs."""
        if not isinstance(name, str):
            raise TypeError(
                f"step.with_rollback(): the name must be a string, not {type(name).__name__}"
            )

        def decorator(func: Callable[..., Any]) -> SagaStepFunction:
            function = SagaStepFunction(self, name, func, config)
            self._functions[name] = function
            self._functions[func.__name__] = function
            return function

        return decorator

    async def run_workflow(
        self,
        name: str,
        workflow: str,
        params: Any = None,
        *,
        id: str | None = None,
        timeout: Any = children.DEFAULT_TIMEOUT,
        config: Any = None,
        detached: bool = False,
    ) -> Any:
        """Run an instance of another registered workflow as one step and return its output
        (a Stepstone extension: see docs/authoring.md). ``detached`` children survive the
        parent's termination."""
        call = children.prepare(
            name,
            workflow,
            params,
            instance_id=id,
            timeout=timeout,
            config=config,
            detached=detached,
        )
        return await self.run_do(name, call, config=config, rollback=None, rollback_config=None)

    async def approval_link(
        self,
        name: str,
        event_type: str,
        expires: Any = approvals.DEFAULT_EXPIRES,
        *,
        title: str | None = None,
    ) -> str:
        """A signed, expiring, single-use URL whose page sends ``event_type`` to this instance
        with the person's decision (a Stepstone extension: see docs/authoring.md). Recorded
        as a step: a replay returns the same URL."""
        where = f"step.approval_link({name!r})"
        problem = event_type_problem(event_type)
        if problem:
            raise WorkflowFatalError(f"{where}: {problem}")
        expires_ms = duration_argument(expires, f"{where} expires")
        if not approvals.MIN_EXPIRES_MS <= expires_ms <= approvals.MAX_EXPIRES_MS:
            raise WorkflowFatalError(f"{where}: a link expires in 1 second to 365 days")
        if title is not None and (not isinstance(title, str) or len(title) > approvals.MAX_TITLE):
            raise WorkflowFatalError(f"{where}: a title is text of at most 500 characters")
        act = self.activation

        async def create() -> str:
            return await approvals.create_link(
                act.storage,
                instance_pk=act.claim.instance.pk,
                event_type=event_type,
                expires_ms=expires_ms,
                title=title,
                now=act.now(),
            )

        return str(
            await self.run_do(
                name, direct_call(create), config=None, rollback=None, rollback_config=None
            )
        )

    async def sleep(self, name: str, duration: Any) -> None:
        ms = waits.sleep_ms(name, duration)
        await self._sleep(name, lambda now: now + ms, ms)

    async def sleep_until(self, name: str, timestamp: datetime | int | float) -> None:
        target = waits.sleep_until_ms(name, timestamp)

        def wake_at(now: int) -> int:
            if target < now:
                raise ValueError("You can't sleep until a time in the past, time-traveler")
            return target

        await self._sleep(name, wake_at, None)

    async def wait_for_event(
        self,
        name: str,
        event_type: str,
        /,
        timeout: Any = "24 hours",
        *,
        match: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``match`` (a Stepstone extension): only an event whose payload holds these
        key/value pairs (nested, exact) satisfies the wait; others stay buffered."""
        timeout_ms = waits.wait_timeout_ms(name, event_type, timeout, match)
        key, _ = self._begin(h.WAIT, name)
        await self._check_replay_order(key)
        return await waits.wait_for_event(self.activation, key, event_type, timeout_ms, match)

    async def _sleep(
        self, name: str, compute_wake: Callable[[int], int], duration_ms: int | None
    ) -> None:
        key, _ = self._begin(h.SLEEP, name)
        await self._check_replay_order(key)
        await waits.sleep(self.activation, key, compute_wake, duration_ms)

    # --- step.do ----------------------------------------------------------------------------

    def _decorate(
        self, name: str, func: Callable[..., Any], options: dict[str, Any]
    ) -> StepFunction:
        function = StepFunction(self, name, func, **options)
        self._functions[name] = function
        self._functions[func.__name__] = function
        return function

    def count_step(self) -> None:
        """Count a step.do (or a child workflow) against the instance's step limit."""
        act = self.activation
        self._do_count += 1
        if self._do_count > act.step_limit:
            raise InstanceFailed(
                "WorkflowFatalError",
                f"The limit of {act.step_limit} steps has been reached for this instance",
            )

    def find_step_function(self, param: str) -> StepFunction | None:
        return self._functions.get(param)

    async def run_do(
        self,
        name: str,
        call: Callable[[dict[str, Any]], Any],
        *,
        config: Any,
        rollback: Callable[..., Any] | None,
        rollback_config: Any,
        saga: SagaStepFunction | None = None,
    ) -> Any:
        act = self.activation
        if self.in_rollback_phase:
            raise WorkflowFatalError("Cannot execute steps during rollback phase")
        if rollback is not None and not callable(rollback):
            raise WorkflowFatalError(f'Step "{name}": rollback must be a function')
        resolved = resolve_config(config, name)
        rollback_cfg = (
            parse_rollback_config(rollback_config, name) if rollback is not None else None
        )
        self.count_step()
        key, count = self._begin(h.DO, name)
        await self._check_replay_order(key)
        record = act.history.steps.get(key)
        ctx_base = {"step": {"name": name, "count": count}}
        entry: Compensation | None = None
        if rollback is not None or saga is not None:
            handler: Callable[..., Any] = rollback if rollback is not None else saga  # type: ignore[assignment]
            entry = Compensation(key, handler, rollback_cfg, ctx_base)
            if record is not None:
                entry.observe(record)
            (self.rollbacks if saga is None else self.sagas).append(entry)
        if act.replay_only:
            return recorded_json(record) if record is not None and record.done else None
        if record is not None and record.done:
            return await recorded_result(act, record)
        act.executing += 1
        try:
            if isinstance(call, children.ChildCall):
                return await children.run_child(act, key, record, resolved.recorded(), call)
            return await self._execute(
                key, record, resolved.recorded(), resolved.delay, call, ctx_base, entry
            )
        finally:
            act.executing -= 1

    async def _execute(
        self,
        key: tuple[str, str],
        record: h.StepRecord | None,
        fresh_config: dict[str, Any],
        live_delay: Any,
        call: Callable[[dict[str, Any]], Any],
        ctx_base: dict[str, Any],
        entry: Compensation | None,
        kind_prefix: str = "",
    ) -> Any:
        """Run the attempts of a step (or of a rollback, ``kind_prefix=ROLLBACK_PREFIX``)."""
        attempts = Attempts(
            self.activation,
            key,
            record,
            fresh_config,
            live_delay,
            call,
            ctx_base,
            entry,
            kind_prefix,
        )
        return await attempts.run()

    # --- rollbacks ---------------------------------------------------------------------------

    async def _forward_output(self, entry: Compensation) -> Any:
        """What the forward step returned (as replay would return it), or None if it failed."""
        if entry.stream is not None:
            return await stream_value(self.activation, entry.key[1], entry.stream)
        return None if entry.output is None else orjson.loads(entry.output)

    # --- naming and replay order ------------------------------------------------------------

    def _begin(self, kind: str, name: str) -> tuple[tuple[str, str], int]:
        problem = step_name_problem(name)
        if problem:
            raise WorkflowFatalError(f"Invalid step name {name!r}: {problem}")
        counter = (kind, name)
        count = self._counters.get(counter, 0) + 1
        self._counters[counter] = count
        key = (kind, f"{name}-{count}")
        self.activation.unrequested.discard(key)
        return key, count

    async def _check_replay_order(self, key: tuple[str, str]) -> None:
        """A new step may start only once every recorded step has been asked for again.

        Recorded steps return without waiting, so after the other branches have had a few
        turns of the event loop every recorded step is requested, unless the code changed.
        """
        act = self.activation
        if key in act.history.steps or not act.unrequested or act.replay_only:
            return
        act.executing += 1
        try:
            for _ in range(100):
                await asyncio.sleep(0)
                if not act.unrequested:
                    return
        finally:
            act.executing -= 1
        missing = min(
            (act.history.steps[k] for k in act.unrequested), key=lambda s: s.first_event_id
        )
        raise InstanceFailed(
            "NondeterminismError",
            f"The workflow asked for {describe_step(key)} where its recorded history has "
            f"{describe_step((missing.kind, missing.name))}: the code changed under a running "
            "instance. Restart the instance, or deploy the change under a new workflow name.",
        )


public_names(
    ReplayStep,
    {
        "_do_implicit": "step.do",
        "_do_legacy": "step.do",
        "with_rollback": "step.with_rollback",
        "rollback_all": "step.rollback_all",
        "sleep": "step.sleep",
        "sleep_until": "step.sleep_until",
        "wait_for_event": "step.wait_for_event",
        "run_workflow": "step.run_workflow",
        "approval_link": "step.approval_link",
    },
)


def describe_step(key: tuple[str, str]) -> str:
    """A step as the workflow's code names it: ``step.do "name-1"``."""
    kind, name = key
    return {"do": "step.do", "sleep": "step.sleep", "waitForEvent": "step.wait_for_event"}.get(
        kind, kind
    ) + f' "{name}"'
