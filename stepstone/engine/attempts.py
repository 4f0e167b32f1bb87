"""The attempts of one ``step.do``, or of one rollback: its timeout, its retries and their
delays, the attempt a crash left open, and the events each attempt records.

Every attempt is recorded as started before it runs, so an activation that dies during one
finds it open (``dangling``) and fails it as an internal error, retried by the step's policy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from stepstone.authoring.config import DYNAMIC_DELAY
from stepstone.authoring.durations import parse_duration
from stepstone.engine.callables import invoke
from stepstone.engine.deadlines import AttemptDeadline
from stepstone.engine.errors_codec import (
    encode_error,
    format_traceback,
    is_non_retryable,
    recreate_error,
)
from stepstone.engine.payloads import encode_output, stream_value
from stepstone.engine.retry import backoff_delay_ms, should_retry
from stepstone.engine.signals import InstanceFailed
from stepstone.engine.step_host import park
from stepstone.errors import WorkflowTimeoutError
from stepstone.model import history as h
from stepstone.model.events import EventType
from stepstone.observability.probes import AttemptProbe

if TYPE_CHECKING:
    from stepstone.engine.compensation import Compensation
    from stepstone.engine.step_host import StepHost

log = logging.getLogger("stepstone.step")

DELAY_FN_TIMEOUT_S = 5.0


class Attempts:
    """Run a step's attempts until one succeeds, the step fails for good, or it must wait.

    ``kind_prefix`` is ``ROLLBACK_PREFIX`` for a rollback's attempts. ``entry`` is the forward
    step's compensation, if it has one: it learns here that the step started and what it
    returned, since history is not updated for live steps.
    """

    def __init__(
        self,
        act: StepHost,
        key: tuple[str, str],
        record: h.StepRecord | None,
        fresh_config: dict[str, Any],
        live_delay: Any,
        call: Callable[[dict[str, Any]], Any],
        ctx_base: dict[str, Any],
        entry: Compensation | None,
        kind_prefix: str = "",
    ) -> None:
        self.act = act
        self.key = key
        self.record = record
        self.fresh_config = fresh_config
        self.live_delay = live_delay
        self.call = call
        self.ctx_base = ctx_base
        self.entry = entry
        self.kind_prefix = kind_prefix
        self.config = fresh_config
        self.timeout_ms = 0

    async def run(self) -> Any:
        act, record = self.act, self.record
        # A result held back for the next write is written first: this step may depend on
        # it, and the write brings back a pause that new steps must wait for.
        await act.settle()
        if act.holds_new_steps:
            await park(act, None)
        # The config recorded at the first attempt wins over the code's current one.
        if record is not None and record.config:
            self.config = record.config
        self.timeout_ms = parse_duration(self.config["timeout"])
        announced = record is not None and bool(record.attempts)
        attempt = await self._settle_record() if record is not None else 0
        shown_config = _context_config(self.config)
        while True:
            attempt += 1
            self._record_start(attempt, announced)
            announced = True
            # Recorded results may still be syncing: no side effect may depend on one that a
            # power cut could take back.
            await act.storage.sync()
            ctx = {**self.ctx_base, "attempt": attempt, "config": shown_config}
            probe = AttemptProbe(
                act.workflow_name, self.kind_prefix + self.key[0], self.key[1], attempt
            )
            try:
                async with AttemptDeadline(self.timeout_ms / 1000) as scope:
                    value = await invoke(self.call, ctx)
                    payload = await encode_output(act, self.key[1], value)
            except Exception as exc:  # signals (cancel, lease lost, fatal) are BaseExceptions
                timed_out = isinstance(exc, TimeoutError) and scope.expired()
                await self._failed(attempt, exc, timed_out, ctx, probe)
                continue
            probe.end()
            return await self._completed(attempt, payload)

    async def _settle_record(self) -> int:
        """Deal with what the record left, and return how many attempts it holds.

        An attempt left open by a crash fails as an internal error (the step too, once its
        retries are spent); a retry not yet due parks the step.
        """
        act, record = self.act, self.record
        assert record is not None
        attempts_made = len(record.attempts)
        dangling = record.dangling_attempt
        if dangling is not None:
            error = h.INTERNAL_ATTEMPT_ERROR
            data = {"attempt": dangling.attempt, "error": error}
            act.write_nowait(
                [act.event(self.kind_prefix + EventType.ATTEMPT_ERRORED, data, self.key)]
            )
            dangling.end, dangling.success, dangling.error = act.now(), False, error
            if not should_retry(attempts_made, self.config["retries"]["limit"]):
                if self.entry is not None:
                    self.entry.error = error
                await self._fail_step(error, self.kind_prefix)
        elif record.retry_at is not None and act.now() < record.retry_at:
            await park(act, record.retry_at)
        return attempts_made

    def _record_start(self, attempt: int, announced: bool) -> None:
        act = self.act
        events = []
        if not announced:
            started = {"config": self.config, "hasRollback": self.entry is not None}
            events.append(act.event(self.kind_prefix + EventType.STEP_STARTED, started, self.key))
        data = {"attempt": attempt}
        events.append(act.event(self.kind_prefix + EventType.ATTEMPT_STARTED, data, self.key))
        act.write_nowait(events)
        if self.entry is not None:
            self.entry.began(act.next_order())

    async def _failed(
        self,
        attempt: int,
        exc: Exception,
        timed_out: bool,
        ctx: dict[str, Any],
        probe: AttemptProbe,
    ) -> None:
        """Record the failed attempt; raise the step's error unless a retry follows."""
        act = self.act
        trace = format_traceback(exc)
        if timed_out:
            exc = WorkflowTimeoutError(f"Execution timed out after {self.timeout_ms}ms")
        error = encode_error(exc)
        self._log_failure(attempt, error, trace)
        probe.end(exc)
        if self.entry is not None:
            self.entry.error = error
        kind = self.kind_prefix + EventType.ATTEMPT_ERRORED
        if is_non_retryable(exc) or not should_retry(attempt, self.config["retries"]["limit"]):
            data = {"attempt": attempt, "error": error, "traceback": trace}
            act.write_nowait([act.event(kind, data, self.key)])
            await self._fail_step(error, self.kind_prefix)
        delay = await self._retry_delay(exc, attempt, ctx)
        probe.retried()
        # One clock reading, so the record's retryAt is exactly its time + the delay.
        now = act.now()
        retry_at = now + delay
        data = {
            "attempt": attempt,
            "error": error,
            "retryDelayMs": delay,
            "retryAt": retry_at,
            "traceback": trace,
        }
        await act.write([act.event(kind, data, self.key, ts=now)])
        if delay > 0:
            await park(act, retry_at)

    async def _completed(self, attempt: int, payload: bytes | dict[str, Any]) -> Any:
        """Record the step's success and return its value as a replay would.

        The record commits with the activation's next write, before any code that could
        depend on it runs: a step or a wait, the instance's end (``StepHost.hold``).
        """
        act, entry = self.act, self.entry
        is_stream = isinstance(payload, dict)
        completed = {"stream": payload} if is_stream else {"output": orjson.Fragment(payload)}
        act.hold(
            [
                act.event(
                    self.kind_prefix + EventType.ATTEMPT_COMPLETED, {"attempt": attempt}, self.key
                ),
                act.event(self.kind_prefix + EventType.STEP_COMPLETED, completed, self.key),
            ]
        )
        if isinstance(payload, dict):
            if entry is not None:
                entry.error, entry.stream = None, payload
            return await stream_value(act, self.key[1], payload)
        if entry is not None:
            entry.error, entry.output = None, payload
        return orjson.loads(payload)

    async def _retry_delay(self, exc: BaseException, attempt: int, ctx: dict[str, Any]) -> int:
        retries = self.config["retries"]
        if retries["delay"] != DYNAMIC_DELAY:
            base = parse_duration(retries["delay"])
        else:
            base = await self._dynamic_delay(exc, ctx)
        return backoff_delay_ms(base, attempt, retries["backoff"])

    async def _dynamic_delay(self, exc: BaseException, ctx: dict[str, Any]) -> int:
        """The base delay the step's delay function gives for this failure; a function that
        is gone, fails or takes too long fails the step for good."""
        live_delay = self.live_delay
        try:
            if not callable(live_delay):
                raise TypeError("the code no longer gives a delay function")
            async with asyncio.timeout(DELAY_FN_TIMEOUT_S):
                return parse_duration(await invoke(lambda c: live_delay(c, exc), ctx))
        except (asyncio.CancelledError, InstanceFailed):
            raise
        except Exception as fn_exc:
            reason = "timed out" if isinstance(fn_exc, TimeoutError) else f"failed: {fn_exc}"
            message = f'The delay function for step "{self.key[1]}" {reason}'
            error = {"name": "NonRetryableDelayError", "message": message}
            # Recorded as a step_errored (not rollback_step_errored) whatever the kind.
            await self._fail_step(error, "")

    async def _fail_step(self, error: dict[str, Any], kind_prefix: str) -> NoReturn:
        act = self.act
        await act.write(
            [act.event(kind_prefix + EventType.STEP_ERRORED, {"error": error}, self.key)]
        )
        raise recreate_error(error)

    def _log_failure(self, attempt: int, error: dict[str, Any], trace: str) -> None:
        what = "Rollback of step" if self.kind_prefix else "Step"
        instance = self.act.claim.instance
        workflow = self.act.workflow_name
        log.warning(
            '%s "%s" of instance %s (workflow %s) failed on attempt %d: %s: %s\n%s',
            what,
            self.key[1],
            instance.id,
            workflow,
            attempt,
            error["name"],
            error["message"],
            trace.rstrip("\n"),
            extra={
                "instance_id": instance.id,
                "workflow": workflow,
                "step": self.key[1],
                "attempt": attempt,
            },
        )


def _context_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config ``ctx`` shows: a delay function is code, not a value to show."""
    if config["retries"].get("delay") != DYNAMIC_DELAY:
        return config
    retries = {k: v for k, v in config["retries"].items() if k != "delay"}
    return {**config, "retries": retries}
