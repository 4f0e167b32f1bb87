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

from stepstone.storage.postgres_batch import Batcher, settle

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadBatcher(Batcher[tuple[K, "asyncio.Future[V]"]], Generic[K, V]):
    def __init__(
        self,
        fetch_one: Callable[[K], Awaitable[V]],
        fetch_many: Callable[[Sequence[K]], Awaitable[dict[K, V]]],
        missing: V,
        max_inflight: int,
    ) -> None:
        """``fetch_many`` answers for each key it found; ``missing`` stands for the others."""
        super().__init__(max_inflight)
        self._fetch_one = fetch_one
        self._fetch_many = fetch_many
        self._missing = missing

    async def get(self, key: K) -> V:
        if self._idle:
            return await self._alone(self._fetch_one(key))
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._enqueue((key, future))
        return await future

    async def _send(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        try:
            found = await self._fetch_many(list(dict.fromkeys(key for key, _ in batch)))
        except Exception as exc:
            for _, future in batch:
                settle(future, exc)
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        else:
            for key, future in batch:
                settle(future, found.get(key, self._missing))
