"""The replay step: what ``run(event, step)`` calls.

Each call computes the step's visible name (``name-N``, counted per kind), looks it up in the
history loaded once for this activation, and either answers from the record or does the work
and records it. When the instance must wait (a sleep not due, an event not sent, a retry
delay, a pause) the call parks; once nothing is executing, the activation drops the coroutine
and the worker releases the instance with its wake-up time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from stepstone.authoring.config import DYNAMIC_DELAY, parse_rollback_config, resolve_config
from stepstone.authoring.durations import InvalidDurationError, parse_duration
from stepstone.engine import approvals, children
from stepstone.engine import history as h
from stepstone.engine.callables import direct_call, invoke
from stepstone.engine.compensation import Compensation, Compensations
from stepstone.engine.errors_codec import (
    encode_error,
    format_traceback,
    is_non_retryable,
    recreate_error,
)
from stepstone.engine.holding import holding
from stepstone.engine.python_api import (
    SagaStepFunction,
    StepFunction,
    check_depends,
    public_names,
)
from stepstone.engine.retry import backoff_delay_ms, should_retry
from stepstone.engine.signals import InstanceFailed
from stepstone.errors import StepError, WorkflowFatalError, WorkflowTimeoutError
from stepstone.observability import tracing
from stepstone.observability.probes import AttemptProbe
from stepstone.validation import event_type_problem, step_name_problem

if TYPE_CHECKING:
    from stepstone.engine.activation import Activation

log = logging.getLogger("stepstone.step")

MAX_JSON_BYTES = 1 << 20
STREAM_CHUNK_BYTES = 256 * 1024
MAX_SLEEP_MS = 365 * 86_400_000
MIN_WAIT_TIMEOUT_MS = 1_000
DELAY_FN_TIMEOUT_S = 5.0
ENCODE_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def encode_json(value: Any, what: str) -> bytes:
    """Encode a step output or instance result, or fail the instance: it cannot be stored."""
    try:
        return orjson.dumps(value, option=ENCODE_OPTIONS)
    except TypeError as exc:
        raise InstanceFailed(
            "WorkflowFatalError", f"Value returned from {what} is not serialisable: {exc}"
        ) from None


def _dump(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value)


class ReplayStep(Compensations):
    """The ``step`` object of one activation."""

    # step.do's signature depends on the activation's implicit_dependencies, as workerd's
    # SDK picks it from the python_workflows_implicit_dependencies flag.
    do: Callable[..., Any]

    def __init__(self, activation: Activation) -> None:
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
            self,
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
        expires_ms = _duration(expires, f"{where} expires")
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
        ms = _duration(duration, f'step.sleep("{name}")')
        if ms > MAX_SLEEP_MS:
            raise WorkflowFatalError(f'step.sleep("{name}"): the longest sleep is 365 days')
        await self._sleep(name, lambda now: now + ms, ms)

    async def sleep_until(self, name: str, timestamp: datetime | int | float) -> None:
        if isinstance(timestamp, datetime):
            # A naive datetime is local time, as datetime.timestamp() reads it; on Cloudflare
            # the runtime's zone is UTC, so both agree there.
            target = int(timestamp.timestamp() * 1000)
        elif isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
            target = int(timestamp)  # epoch milliseconds, as Cloudflare's engine reads numbers
        else:
            raise WorkflowFatalError(f"step.sleep_until({name!r}): give a datetime or epoch ms")

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
        problem = event_type_problem(event_type)
        if problem:
            raise WorkflowFatalError(f"step.wait_for_event({name!r}): {problem}")
        if match is not None:
            problem = _match_problem(match)
            if problem:
                raise WorkflowFatalError(f"step.wait_for_event({name!r}) match: {problem}")
        timeout_ms = _duration(timeout, f'step.wait_for_event("{name}") timeout')
        if not MIN_WAIT_TIMEOUT_MS <= timeout_ms <= MAX_SLEEP_MS:
            raise WorkflowFatalError(
                f"step.wait_for_event({name!r}): the timeout is between 1 second and 365 days"
            )
        act = self.activation
        key, _ = self._begin(h.WAIT, name)
        await self._check_replay_order(key)
        record = act.history.steps.get(key)
        if act.replay_only:
            if record is not None and record.done and record.success:
                return _wait_result(record)
            return {"payload": None, "timestamp": None, "type": event_type}
        act.executing += 1
        try:
            if record is not None and record.done:
                return _wait_result(record)
            now = act.now()
            if record is None:
                record = h.StepRecord(h.WAIT, key[1], 0, now, wake_at=now + timeout_ms)
                record.event_type = event_type
                act.history.steps[key] = record
                act.write_nowait(
                    [
                        act.event(
                            "wait_started",
                            {
                                "eventType": event_type,
                                "timeoutMs": timeout_ms,
                                "deadline": record.wake_at,
                            },
                            key,
                        )
                    ]
                )
            if act.holds_new_steps:
                await self._park(None)
            completion = act.event("wait_completed", {}, key)
            if match is None:
                delivered = await act.consume_event(event_type, completion)
            else:
                with holding():
                    delivered = await act.storage.consume_event(
                        act.claim, event_type, completion, match
                    )
            if delivered is not None:
                record.done, record.success = True, True
                tracing.wait("wait", key[1], record.start)
                record.event = {
                    "type": event_type,
                    "payload": orjson.loads(delivered.payload),
                    "timestamp": delivered.ts,
                }
                return _wait_result(record)
            assert record.wake_at is not None
            if act.now() >= record.wake_at:
                error = {
                    "name": "WorkflowTimeoutError",
                    "message": f"Execution timed out after {timeout_ms}ms",
                }
                await act.write([act.event("wait_timed_out", {"error": error}, key)])
                record.done, record.success, record.error = True, False, error
                raise WorkflowTimeoutError(error["message"])
            await self._park(record.wake_at)
        finally:
            act.executing -= 1
        raise AssertionError("unreachable")  # pragma: no cover

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
            return _cached_value(act, record) if record is not None and record.done else None
        if record is not None and record.done:
            return await _recorded_result(act, record)
        act.executing += 1
        try:
            if isinstance(call, children.ChildCall):
                return await children.run_child(self, key, record, resolved.recorded(), call)
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
        """Run the attempts of a step (or of a rollback, ``kind_prefix="rollback_"``).

        ``entry`` is the forward step's compensation, if it has one: it learns here that the
        step started and what it returned, since history is not updated for live steps.
        """
        act = self.activation
        if act.holds_new_steps:
            await self._park(None)
        # The config recorded at the first attempt wins over the code's current one.
        config = record.config if record is not None and record.config else fresh_config
        retries = config["retries"]
        timeout_ms = parse_duration(config["timeout"])
        attempts_made = len(record.attempts) if record is not None else 0
        first = record is None or not record.attempts
        if record is not None:
            dangling = record.dangling_attempt
            if dangling is not None:
                act.write_nowait(
                    [
                        act.event(
                            kind_prefix + "attempt_errored",
                            {"attempt": dangling.attempt, "error": h.INTERNAL_ATTEMPT_ERROR},
                            key,
                        )
                    ]
                )
                dangling.end, dangling.success = act.now(), False
                dangling.error = h.INTERNAL_ATTEMPT_ERROR
                if not should_retry(attempts_made, retries["limit"]):
                    if entry is not None:
                        entry.error = h.INTERNAL_ATTEMPT_ERROR
                    return await self._fail_step(key, h.INTERNAL_ATTEMPT_ERROR, kind_prefix)
            elif record.retry_at is not None and act.now() < record.retry_at:
                await self._park(record.retry_at)
        shown_config = _context_config(config)
        while True:
            attempt = attempts_made + 1
            events = []
            if first:
                events.append(
                    act.event(
                        kind_prefix + "step_started",
                        {"config": config, "hasRollback": entry is not None},
                        key,
                    )
                )
                first = False
            events.append(act.event(kind_prefix + "attempt_started", {"attempt": attempt}, key))
            act.write_nowait(events)
            if entry is not None:
                entry.began(act.next_order())
            # Recorded results may still be syncing: no side effect may depend on one that a
            # power cut could take back.
            await act.storage.sync()
            ctx = {**ctx_base, "attempt": attempt, "config": shown_config}
            probe = AttemptProbe(act.workflow_name, kind_prefix + key[0], key[1], attempt)
            try:
                async with asyncio.timeout(timeout_ms / 1000) as scope:
                    value = await invoke(call, ctx)
                    payload = await self._store_output(key, value)
            except Exception as exc:  # signals (cancel, lease lost, fatal) are BaseExceptions
                trace = format_traceback(exc)
                if isinstance(exc, TimeoutError) and scope.expired():
                    exc = WorkflowTimeoutError(f"Execution timed out after {timeout_ms}ms")
                error = encode_error(exc)
                self._log_failure(key, kind_prefix, attempt, error, trace)
                probe.end(exc)
                if entry is not None:
                    entry.error = error
                if is_non_retryable(exc) or not should_retry(attempt, retries["limit"]):
                    act.write_nowait(
                        [
                            act.event(
                                kind_prefix + "attempt_errored",
                                {"attempt": attempt, "error": error, "traceback": trace},
                                key,
                            )
                        ]
                    )
                    return await self._fail_step(key, error, kind_prefix)
                delay = await self._retry_delay(key, retries, live_delay, ctx, exc, attempt)
                probe.retried()
                # One clock reading, so the record's retryAt is exactly its time + the delay.
                now = act.now()
                retry_at = now + delay
                await act.write(
                    [
                        act.event(
                            kind_prefix + "attempt_errored",
                            {
                                "attempt": attempt,
                                "error": error,
                                "retryDelayMs": delay,
                                "retryAt": retry_at,
                                "traceback": trace,
                            },
                            key,
                            ts=now,
                        )
                    ]
                )
                attempts_made = attempt
                if delay > 0:
                    await self._park(retry_at)
                continue
            probe.end()
            completed = (
                {"stream": payload}
                if isinstance(payload, dict)
                else {"output": orjson.Fragment(payload)}
            )
            await act.write(
                [
                    act.event(kind_prefix + "attempt_completed", {"attempt": attempt}, key),
                    act.event(kind_prefix + "step_completed", completed, key),
                ]
            )
            if entry is not None:
                entry.error = None
                if isinstance(payload, dict):
                    entry.stream = payload
                else:
                    entry.output = payload
            if isinstance(payload, dict):
                return await _stream_value(act, key[1], payload)
            return orjson.loads(payload)

    def _log_failure(
        self,
        key: tuple[str, str],
        kind_prefix: str,
        attempt: int,
        error: dict[str, Any],
        trace: str,
    ) -> None:
        what = "Rollback of step" if kind_prefix else "Step"
        instance = self.activation.claim.instance
        log.warning(
            '%s "%s" of instance %s (workflow %s) failed on attempt %d: %s: %s\n%s',
            what,
            key[1],
            instance.id,
            self.activation.workflow_name,
            attempt,
            error["name"],
            error["message"],
            trace.rstrip("\n"),
            extra={
                "instance_id": instance.id,
                "workflow": self.activation.workflow_name,
                "step": key[1],
                "attempt": attempt,
            },
        )

    async def _fail_step(
        self, key: tuple[str, str], error: dict[str, Any], kind_prefix: str
    ) -> NoReturn:
        act = self.activation
        await act.write([act.event(kind_prefix + "step_errored", {"error": error}, key)])
        raise recreate_error(error)

    async def _retry_delay(
        self,
        key: tuple[str, str],
        retries: dict[str, Any],
        live_delay: Any,
        ctx: dict[str, Any],
        exc: BaseException,
        attempt: int,
    ) -> int:
        if retries["delay"] != DYNAMIC_DELAY:
            base = parse_duration(retries["delay"])
        else:
            try:
                if not callable(live_delay):
                    raise TypeError("the code no longer gives a delay function")
                async with asyncio.timeout(DELAY_FN_TIMEOUT_S):
                    base = parse_duration(await invoke(lambda c: live_delay(c, exc), ctx))
            except (asyncio.CancelledError, InstanceFailed):
                raise
            except Exception as fn_exc:
                reason = "timed out" if isinstance(fn_exc, TimeoutError) else f"failed: {fn_exc}"
                message = f'The delay function for step "{key[1]}" {reason}'
                error = {"name": "NonRetryableDelayError", "message": message}
                await self._fail_step(key, error, "")
        return backoff_delay_ms(base, attempt, retries["backoff"])

    async def _store_output(self, key: tuple[str, str], value: Any) -> bytes | dict[str, Any]:
        """Return the output encoded as JSON, or the stream summary after storing it."""
        act = self.activation
        if isinstance(value, bytes | bytearray | memoryview):
            return await act.store_stream(key[1], _iter_bytes(bytes(value)), "bytes")
        if hasattr(value, "__aiter__"):
            return await act.store_stream(key[1], _rechunk(value), "iterator")
        encoded = encode_json(value, f'step "{key[1]}"')
        if len(encoded) > MAX_JSON_BYTES:
            # Cloudflare's engine fails the attempt with this error and retries it by policy.
            raise StepError(
                "WorkflowInternalError",
                f"Step {key[1]} output is too large. Maximum allowed size is 1MiB.",
            )
        return encoded

    # --- rollbacks ---------------------------------------------------------------------------

    async def _forward_output(self, entry: Compensation) -> Any:
        """What the forward step returned (as replay would return it), or None if it failed."""
        if entry.stream is not None:
            return await _stream_value(self.activation, entry.key[1], entry.stream)
        return None if entry.output is None else orjson.loads(entry.output)

    # --- naming, replay order, parking ------------------------------------------------------

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
            f"The workflow asked for {_describe(key)} where its recorded history has "
            f"{_describe((missing.kind, missing.name))}: the code changed under a running "
            "instance. Restart the instance, or deploy the change under a new workflow name.",
        )

    async def _park(self, wake_at: int | None) -> NoReturn:
        await self.activation.park(wake_at)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _sleep(
        self, name: str, compute_wake: Callable[[int], int], duration_ms: int | None
    ) -> None:
        act = self.activation
        key, _ = self._begin(h.SLEEP, name)
        await self._check_replay_order(key)
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
                    [act.event("sleep_started", {"durationMs": shown, "wakeAt": wake}, key)]
                )
            assert record.wake_at is not None
            if act.now() >= record.wake_at:
                act.write_nowait([act.event("sleep_completed", {}, key)])
                record.done = True
                tracing.wait("sleep", key[1], record.start)
                return
            await self._park(record.wake_at)
        finally:
            act.executing -= 1


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


def _context_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config ``ctx`` shows: a delay function is code, not a value to show."""
    if config["retries"].get("delay") != DYNAMIC_DELAY:
        return config
    retries = {k: v for k, v in config["retries"].items() if k != "delay"}
    return {**config, "retries": retries}


def _describe(key: tuple[str, str]) -> str:
    kind, name = key
    return {"do": "step.do", "sleep": "step.sleep", "waitForEvent": "step.wait_for_event"}.get(
        kind, kind
    ) + f' "{name}"'


def _match_problem(match: object) -> str | None:
    if not isinstance(match, Mapping) or not match:
        return "give a non-empty dict of the payload's key/value pairs"
    try:
        orjson.dumps(match)
    except TypeError as exc:
        return f"not JSON: {exc}"
    return None


def _duration(value: Any, what: str) -> int:
    try:
        return parse_duration(value)
    except InvalidDurationError as exc:
        raise WorkflowFatalError(f"{what}: {exc}") from None


def _wait_result(record: h.StepRecord) -> dict[str, Any]:
    if not record.success:
        raise recreate_error(record.error)
    event = record.event or {}
    return {
        "payload": event.get("payload"),
        "timestamp": datetime.fromtimestamp(int(event.get("timestamp") or 0) / 1000, UTC),
        "type": event.get("type"),
    }


def _cached_value(act: Activation, record: h.StepRecord | None) -> Any:
    if record is None or not record.success or record.output is None:
        return None
    return orjson.loads(record.output)


async def _recorded_result(act: Activation, record: h.StepRecord) -> Any:
    if not record.success:
        raise recreate_error(record.error)
    if record.stream is not None:
        return await _stream_value(act, record.name, record.stream)
    return _cached_value(act, record)


async def _stream_value(act: Activation, step_name: str, stream: dict[str, Any]) -> Any:
    chunks = act.read_stream(step_name, int(stream["chunks"]))
    if stream.get("form") == "bytes":
        return b"".join([chunk async for chunk in chunks])
    return chunks


async def _iter_bytes(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), STREAM_CHUNK_BYTES):
        yield data[start : start + STREAM_CHUNK_BYTES]


async def _rechunk(source: Any) -> AsyncIterator[bytes]:
    buffer = bytearray()
    async for chunk in source:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise InstanceFailed(
                "WorkflowFatalError",
                f"A byte-stream step yielded {type(chunk).__name__}; yield bytes only",
            )
        buffer += chunk
        while len(buffer) >= STREAM_CHUNK_BYTES:
            yield bytes(buffer[:STREAM_CHUNK_BYTES])
            del buffer[:STREAM_CHUNK_BYTES]
    if buffer:
        yield bytes(buffer)
