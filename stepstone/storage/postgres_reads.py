"""Concurrent reads of the same kind share one query on PostgreSQL.

On a loopback connection the round trip (the socket write that wakes the server) costs more
client CPU than a small indexed read. When many activations start at once, each loading its
history, or many creates look up their workflow, a read that finds fewer than ``max_inflight``
queries under way goes at once and alone; those arriving while all are in flight queue up and
leave together, as one query for every key queued, when one returns. A queued read is sent
after it was asked for, so it sees every write that committed before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadBatcher(Generic[K, V]):
    def __init__(
        self,
        fetch_one: Callable[[K], Awaitable[V]],
        fetch_many: Callable[[Sequence[K]], Awaitable[dict[K, V]]],
        missing: V,
        max_inflight: int,
    ) -> None:
        """``fetch_many`` answers for each key it found; ``missing`` stands for the others."""
        self._fetch_one = fetch_one
        self._fetch_many = fetch_many
        self._missing = missing
        self._max_inflight = max_inflight
        self._inflight = 0
        self._queued: dict[K, list[asyncio.Future[V]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V:
        if self._inflight < self._max_inflight and not self._queued:
            self._inflight += 1
            try:
                return await self._fetch_one(key)
            finally:
                self._inflight -= 1
                self._send_queued()
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(key, []).append(future)
        self._send_queued()
        return await future

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _send_queued(self) -> None:
        if not self._queued or self._inflight >= self._max_inflight:
            return
        batch, self._queued = self._queued, {}
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._read(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, batch: dict[K, list[asyncio.Future[V]]]) -> None:
        try:
            found = await self._fetch_many(list(batch))
        except Exception as exc:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
        except BaseException:
            for futures in batch.values():
                for future in futures:
                    future.cancel()
            raise
        else:
            for key, futures in batch.items():
                for future in futures:
                    if not future.done():
                        future.set_result(found.get(key, self._missing))
        finally:
            self._inflight -= 1
            self._send_queued()
