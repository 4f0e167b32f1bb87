"""What every batcher of the PostgreSQL store shares: at most ``max_inflight`` statements under
way, callers queued behind them, and the queue sent in batches as statements return.

On a loopback connection a round trip costs more client CPU than a small statement, so
concurrent callers of one kind (step results, activation ends, creates, reads) share one. A
subclass says how a caller goes alone (``_alone``), which queued entries leave together
(``_take``) and how a batch is sent and its callers answered (``_send``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Generic, TypeVar

from stepstone.observability import metrics

E = TypeVar("E")
R = TypeVar("R")


class Batcher(Generic[E]):
    def __init__(self, max_inflight: int) -> None:
        # Reads share a statement too, but only writes are commits.
        self._writes = type(self).__name__ != "ReadBatcher"
        self._max_inflight = max_inflight
        self._inflight = 0
        self._queued: list[E] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduled = False

    @property
    def _idle(self) -> bool:
        """Whether a caller may send its own statement now, ahead of nobody."""
        return self._inflight < self._max_inflight and not self._queued

    async def _alone(self, statement: Awaitable[R]) -> R:
        """Run one caller's own statement, counted as in flight."""
        self._inflight += 1
        started = time.perf_counter()
        try:
            return await statement
        finally:
            if self._writes:
                metrics.POSTGRES_COMMIT.observe(time.perf_counter() - started)
                metrics.POSTGRES_BATCH.observe(1)
            self._inflight -= 1
            self._send_queued()

    def _enqueue(self, entry: E) -> None:
        self._queued.append(entry)
        self._send_queued()

    def _enqueue_next_turn(self, entry: E) -> None:
        """Queue ``entry``; the queue leaves once the loop has run what is ready, so that the
        entries of every caller that ran in this turn share a statement."""
        self._queued.append(entry)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send_scheduled)

    def _send_scheduled(self) -> None:
        self._scheduled = False
        self._send_queued()

    def _send_queued(self) -> None:
        while self._queued and self._inflight < self._max_inflight:
            batch = self._take()
            if not batch:  # what is queued must wait for a statement under way
                return
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._send_counted(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_counted(self, batch: list[E]) -> None:
        started = time.perf_counter()
        try:
            await self._send(batch)
        finally:
            if self._writes:
                metrics.POSTGRES_COMMIT.observe(time.perf_counter() - started)
                metrics.POSTGRES_BATCH.observe(len(batch))
            self._inflight -= 1
            self._send_queued()

    def _take(self) -> list[E]:
        """Remove from the queue and return the entries that leave together next (all); an
        empty list if none may leave before a statement under way returns."""
        batch, self._queued = self._queued, []
        return batch

    async def _send(self, batch: list[E]) -> None:
        """Send ``batch`` and answer each of its callers."""
        raise NotImplementedError

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def settle(future: asyncio.Future[R], outcome: R | BaseException) -> None:
    """Answer a queued caller (unless it stopped waiting; what was done stands)."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
