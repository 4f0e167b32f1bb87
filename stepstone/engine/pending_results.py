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
        self._writing: asyncio.Future[None] | None = None

    @property
    def busy(self) -> bool:
        """Something is held or being written: later events must queue behind it, here."""
        return bool(self._held) or self._writing is not None

    def hold(self, events: Sequence[NewEvent]) -> None:
        self._held.extend(events)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(HOLD_S, self._write)

    def queue(self, events: Sequence[NewEvent]) -> None:
        """Events written without waiting that must come after what is held."""
        self._held.extend(events)

    async def settle(self) -> None:
        """Write what is held now, before user code that could depend on it runs.

        Steps starting side by side (``asyncio.gather``) share one write and resume in the
        order they called, so their starts are recorded in that order."""
        if self._held and self._writing is None:
            self._write()
        await self._written()

    async def take(self) -> list[NewEvent]:
        """What is held, for the caller's own write to carry ahead of its events."""
        await self._written()
        self._cancel_timer()
        held, self._held = self._held, []
        return held

    def drop(self) -> None:
        """The activation is taken away or its store lost: what it held is as if never done."""
        self._cancel_timer()
        self._held = []

    async def _written(self) -> None:
        # A held write under way commits first, so the claim's writes stay in their order; if
        # it failed, so does every write after it (the activation ends as after a crash).
        while self._writing is not None:
            await asyncio.shield(self._writing)

    def _write(self) -> None:
        self._cancel_timer()
        if not self._held or self._writing is not None:
            return
        held, self._held = self._held, []
        self._writing = writing = asyncio.ensure_future(self._record(held))

        def done(task: asyncio.Future[None]) -> None:
            if not task.cancelled() and task.exception() is None:
                self._writing = None

        writing.add_done_callback(done)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
