"""Compensations: which steps a rollback undoes, in which order, with what.

A compensation is registered when its step is asked for, but only a step that started (an
attempt on record, or one made in this activation) is undone; ``order`` is its start order.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stepstone.engine.callables import off_loop
from stepstone.engine.errors_codec import encode_error, recreate_error
from stepstone.engine.signals import InstanceFailed
from stepstone.model import history as h
from stepstone.model.events import ROLLBACK_PREFIX

if TYPE_CHECKING:
    from stepstone.engine.python_api import SagaStepFunction
    from stepstone.engine.step_host import StepHost

ROLLBACK_PARAMS = frozenset({"ctx", "error", "output", "step_name"})


class Compensation:
    """A registered compensation and what its forward step did.

    Only a step that started (has an attempt on record, or made one in this activation) is
    compensated; ``order`` is its start order, so the newest start is undone first.
    """

    __slots__ = (
        "config",
        "ctx",
        "error",
        "handler",
        "key",
        "order",
        "output",
        "started",
        "stream",
    )

    def __init__(
        self,
        key: tuple[str, str],
        handler: Callable[..., Any],
        config: Any,
        ctx: dict[str, Any],
    ) -> None:
        self.key = key
        self.handler = handler
        self.config = config
        self.ctx = ctx
        self.started = False
        self.order = 0
        # The forward step's own result, kept as recorded: JSON bytes, or a stream summary.
        self.output: bytes | None = None
        self.stream: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None

    def observe(self, record: h.StepRecord) -> None:
        """Take what the record says the forward step did."""
        if not record.attempts:
            return
        self.started = True
        self.order = record.first_event_id
        if record.done and record.success:
            self.output, self.stream = record.output, record.stream
        elif record.done:
            self.error = record.error
        else:
            self.error = record.attempts[-1].error

    def began(self, order: int) -> None:
        if not self.started:
            self.started, self.order = True, order


class Compensations:
    """The rollback side of the step object: the engine's rollback phase (``rollback=``
    handlers, after an uncaught error or a terminate with rollback) and the Python saga's
    ``step.rollback_all()``. Both compensate only steps that started, newest start first."""

    activation: StepHost
    rollbacks: list[Compensation]
    sagas: list[Compensation]
    in_rollback_phase: bool
    _undoing: bool

    if TYPE_CHECKING:

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
        ) -> Any: ...

        async def _forward_output(self, entry: Compensation) -> Any: ...

    def eligible_rollbacks(self) -> list[Compensation]:
        """Compensations of the steps that started, newest start first, one per step."""
        chosen: dict[tuple[str, str], Compensation] = {}
        for entry in self.rollbacks:
            if entry.started:
                chosen.setdefault(entry.key, entry)
        return sorted(chosen.values(), key=lambda r: r.order, reverse=True)

    async def run_rollbacks(self, trigger_error: dict[str, Any]) -> dict[str, Any]:
        """Run the rollback handlers of started steps, newest first; return the outcome."""
        act = self.activation
        self.in_rollback_phase = True
        for entry in self.eligible_rollbacks():
            rb_key = (h.ROLLBACK, entry.key[1])
            done = act.history.steps.get(rb_key)
            if done is not None and done.done:
                if not done.success:
                    return {"outcome": "failed", "error": done.error}
                continue
            handler = entry.handler
            args = {
                "ctx": entry.ctx,
                "error": recreate_error(trigger_error),
                "output": await self._forward_output(entry),
                "step_name": entry.key[1],
            }
            params = list(inspect.signature(handler).parameters)
            unknown = [p for p in params if p not in ROLLBACK_PARAMS]
            if unknown:
                raise TypeError(f"Received unexpected parameter {unknown[0]}")

            def call(
                ctx: dict[str, Any], handler: Any = handler, args: Any = args, params: Any = params
            ) -> Any:
                return handler(**{p: (ctx if p == "ctx" else args[p]) for p in params})

            try:
                await self._compensate(entry, done, call)
            except (asyncio.CancelledError, InstanceFailed):
                raise
            except Exception as exc:
                return {"outcome": "failed", "error": encode_error(exc)}
        return {"outcome": "complete", "error": None}

    async def _compensate(
        self, entry: Compensation, done: h.StepRecord | None, call: Callable[[dict[str, Any]], Any]
    ) -> None:
        """Run one compensation as a recorded step with its own retries."""
        act = self.activation
        act.executing += 1
        try:
            await self._execute(
                (h.ROLLBACK, entry.key[1]),
                done,
                entry.config.recorded(),
                entry.config.delay,
                call,
                entry.ctx,
                None,
                kind_prefix=ROLLBACK_PREFIX,
            )
        finally:
            act.executing -= 1

    async def rollback_all(
        self, error: BaseException | None = None, *, continue_on_error: bool = False
    ) -> None:
        """Run the undo functions of the ``with_rollback`` steps that started, newest first.

        Each undo is a recorded step with its own retries. The first that fails for good is
        raised; with ``continue_on_error`` the others still run and every failure is raised
        together as an ``ExceptionGroup``. Compensated steps leave the stack, so a second call
        runs only what started since.
        """
        if self.in_rollback_phase or self._undoing:
            raise RuntimeError("step.rollback_all() cannot run while a rollback is in progress")
        chosen: dict[tuple[str, str], Compensation] = {}
        for entry in self.sagas:
            if entry.started:
                chosen.setdefault(entry.key, entry)
        self.sagas = [entry for entry in self.sagas if not entry.started]
        if self.activation.replay_only:
            return
        failures: list[Exception] = []
        self._undoing = True
        try:
            for entry in sorted(chosen.values(), key=lambda r: r.order, reverse=True):
                failure = await self._undo(entry, error)
                if failure is None:
                    continue
                if not continue_on_error:
                    raise failure
                failures.append(failure)
        finally:
            self._undoing = False
        if failures:
            raise ExceptionGroup(
                f"step.rollback_all(): {len(failures)} undo function(s) failed", failures
            )

    async def _undo(self, entry: Compensation, error: BaseException | None) -> Exception | None:
        saga: SagaStepFunction = entry.handler  # type: ignore[assignment]
        undo = saga.undo_fn
        if undo is None:
            return None
        done = self.activation.history.steps.get((h.ROLLBACK, entry.key[1]))
        if done is not None and done.done:
            return None if done.success else recreate_error(done.error)
        if error is None and entry.error is not None:
            error = recreate_error(entry.error)
        value = await self._forward_output(entry)
        entry.config = saga.resolved_undo_config()
        call = off_loop(lambda: undo(error, value), with_ctx=False, blocking=not _is_async(undo))
        try:
            await self._compensate(entry, done, call)
        except Exception as exc:
            return exc
        return None


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)
