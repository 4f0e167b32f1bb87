"""Group commit of step results on PostgreSQL: concurrent ``record_progress`` calls of many
instances share one statement, so one round trip and one WAL flush.

A call that finds fewer than ``max_inflight`` statements under way sends at once, taking
everything queued along, so a lone workflow never waits; calls arriving while the statements
are all in flight queue up and leave together when one returns. Each statement runs in its own
implicit transaction and is resent after a lost connection: the functions of migrations 0003
(one instance) and 0004 (many) recognise what already committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from stepstone.storage.base import Claim, NewEvent
from stepstone.storage.postgres_db import Database

_ONE = "SELECT stepstone_record_progress($1, $2, $3, $4, $5, $6, $7, $8)"
_MANY = (
    "SELECT r_pk, r_status FROM stepstone_record_progress_many($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
_Entry = tuple[Claim, Sequence[NewEvent], "asyncio.Future[str | None]"]


class ProgressCommitter:
    def __init__(self, db: Database, max_inflight: int) -> None:
        self._db = db
        self._max_inflight = max_inflight
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued: list[_Entry] = []

    async def record(self, claim: Claim, events: Sequence[NewEvent]) -> str | None:
        """Append ``events`` fenced by ``claim``; the instance's status, None if fenced."""
        if self._inflight < self._max_inflight and not self._queued:
            # Alone: this caller sends its own statement, no task and no future in between.
            self._inflight += 1
            try:
                return await self._db.idempotent(
                    lambda conn, retry: conn.fetchval(
                        _ONE, claim.instance.pk, claim.epoch, retry, *_columns(events)
                    )
                )
            finally:
                self._inflight -= 1
                self._send_queued()
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._queued.append((claim, events, future))
        self._send_queued()
        return await future

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _send_queued(self) -> None:
        if not self._queued or self._inflight >= self._max_inflight:
            return
        # One entry per instance and statement: a second write of the same instance waits for
        # the next statement, so each instance's writes commit in the order they were made.
        batch: dict[int, _Entry] = {}
        later: list[_Entry] = []
        for entry in self._queued:
            if entry[0].instance.pk in batch:
                later.append(entry)
            else:
                batch[entry[0].instance.pk] = entry
        self._queued = later
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._commit(list(batch.values())))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _commit(self, batch: list[_Entry]) -> None:
        args = _arguments(batch)

        async def job(conn: Any, retry: bool) -> dict[int, str | None]:
            rows = await conn.fetch(_MANY, args[0], args[1], retry, *args[2:])
            return {r[0]: r[1] for r in rows}

        futures = [future for _, _, future in batch]
        try:
            statuses = await self._db.idempotent(job)
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        else:
            for claim, _, future in batch:
                if not future.done():
                    future.set_result(statuses.get(claim.instance.pk))
        finally:
            self._inflight -= 1
            self._send_queued()


def _columns(events: Sequence[NewEvent]) -> tuple[list[Any], ...]:
    return (
        [e.ts for e in events],
        [e.type for e in events],
        [e.step_kind for e in events],
        [e.step_name for e in events],
        [e.data for e in events],
    )


def _arguments(batch: list[_Entry]) -> list[list[Any]]:
    pks, epochs, of, ts, types, kinds, names, data = ([] for _ in range(8))
    for n, (claim, events, _) in enumerate(batch, 1):
        pks.append(claim.instance.pk)
        epochs.append(claim.epoch)
        for e in events:
            of.append(n)
            ts.append(e.ts)
            types.append(e.type)
            kinds.append(e.step_kind)
            names.append(e.step_name)
            data.append(e.data)
    return [pks, epochs, of, ts, types, kinds, names, data]
