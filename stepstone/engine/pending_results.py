"""A step's result kept back for the activation's next write.

A step's completion commits with whatever the activation writes next: the next step's start
(``settle``, before its attempt runs), a wait's write, or the instance's end, which so commits
the last step's result with it, one durable commit fewer per workflow. Only ``run()``'s own
code between steps, which must be free of side effects, runs before that commit. What nothing
takes within ``HOLD_S`` is written on its own, so a ``run()`` awaiting something that is not a
step does not keep a result from the record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from stepstone.storage.base import NewEvent

HOLD_S = 0.005


class PendingResults:
    def __init__(self, record: Callable[[Sequence[NewEvent]], Awaitable[None]]) -> None:
        self._record = record
        self._held: list[NewEvent] = []
        self._timer: asyncio.TimerHandle | None = None
        self._held_since = 0.0
        self._writing: asyncio.Future[None] | None = None

    @property
    def busy(self) -> bool:
        """Something is held or being written: later events must queue behind it, here."""
        return bool(self._held) or self._writing is not None

    def hold(self, events: Sequence[NewEvent]) -> None:
        loop = asyncio.get_running_loop()
        if not self._held:
            self._held_since = loop.time()
        self._held.extend(events)
        # One timer at a time, left to run when what it was set for has been taken: a timer
        # per step, set and cancelled, costs more than the step's own bookkeeping.
        if self._timer is None:
            self._timer = loop.call_later(HOLD_S, self._due)

    def queue(self, events: Sequence[NewEvent]) -> None:
        """Events written without waiting that must come after what is held."""
        self._held.extend(events)

    async def settle(self) -> None:
        """Write what is held now, before user code that could depend on it runs.

        Steps starting side by side (``asyncio.gather``) share one write and resume in the
        order they called, so their starts are recorded in that order."""
        await self._written()
        if not self._held:
            return
        # Written in the caller's own task (a task of its own costs loop turns every step);
        # steps that settle meanwhile wait on ``writing``, and resume after the caller.
        held, self._held = self._held, []
        self._writing = writing = asyncio.get_running_loop().create_future()
        try:
            await self._record(held)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                writing.cancel()
            else:
                writing.set_exception(exc)
                writing.exception()  # those waiting raise it; none may be
            raise
        self._writing = None
        writing.set_result(None)

    async def take(self) -> list[NewEvent]:
        """What is held, for the caller's own write to carry ahead of its events."""
        await self._written()
        held, self._held = self._held, []
        return held

    def drop(self) -> None:
        """The activation is taken away or its store lost: what it held is as if never done."""
        self._cancel_timer()
        self._held = []

    async def _written(self) -> None:
        # A held write under way commits first, so the claim's writes stay in their order; if
        # it failed, so does every write after it (the activation ends as after a crash).
        while (writing := self._writing) is not None:
            if writing.done():
                # Awaiting a done future does not yield to the loop, and the timer's write is
                # only let go by its done callback, which runs at a later turn: waiting here for
                # it would spin with the loop stopped. A write that failed raises.
                writing.result()
                self._writing = None
                return
            await asyncio.shield(writing)

    def _due(self) -> None:
        self._timer = None
        writing = self._writing
        if writing is not None and writing.done():
            if writing.cancelled() or writing.exception() is not None:
                return  # failed: the next write raises it
            self._writing = None
        if not self._held:
            return
        loop = asyncio.get_running_loop()
        wait = self._held_since + HOLD_S - loop.time()
        if wait > 0 or self._writing is not None:
            self._timer = loop.call_later(max(wait, HOLD_S / 5), self._due)
            return
        held, self._held = self._held, []
        self._writing = writing = asyncio.ensure_future(self._record(held))

        def done(task: asyncio.Future[None]) -> None:
            # Let go by ``_written`` already, a newer write may be under way: leave it be.
            if self._writing is task and not task.cancelled() and task.exception() is None:
                self._writing = None

        writing.add_done_callback(done)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
