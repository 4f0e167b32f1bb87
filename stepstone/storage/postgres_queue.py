"""Events a worker records without waiting (an attempt's start), on PostgreSQL.

``add`` queues them; a background flusher writes every queued claim's events in one
transaction, without waiting for the WAL flush. An awaited write of a claim first takes its
events (``take``): it waits for a flush holding them, then carries what is still queued in its
own transaction, so a claim's writes commit in the order they were made.

A flush that fails (the database unreachable past the retry window) puts its events back for
those writes to carry. One whose COMMIT may or may not have taken effect (``CommitUnknown``)
makes the claim's next ``take`` fail instead: written again they could be there twice, left
out a later event would be recorded without them. That activation ends as after a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from stepstone.storage.appended import AppendSignal
from stepstone.storage.base import Claim, NewEvent
from stepstone.storage.postgres_db import CommitUnknown, Database
from stepstone.storage.postgres_progress import event_columns

log = logging.getLogger("stepstone.storage")

# Queued events of many claims at once, each claim's only if its epoch and owner still hold;
# rows are locked in pk order, as claims lock them.
_APPEND_BATCH = (
    "WITH fence AS (SELECT pk, epoch, lease_owner FROM instances WHERE pk = ANY($1::bigint[])"
    " ORDER BY pk FOR UPDATE), appended AS (INSERT INTO instance_events"
    " (instance_pk, ts, type, step_kind, step_name, data)"
    " SELECT e.pk, e.ts, e.type, e.kind, e.name, e.data FROM unnest($2::bigint[], $3::bigint[],"
    " $9::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::bytea[]) WITH ORDINALITY"
    " AS e(pk, epoch, owner, ts, type, kind, name, data, n)"
    " JOIN fence f ON f.pk = e.pk AND f.epoch = e.epoch AND f.lease_owner = e.owner"
    " ORDER BY e.n)"
    " SELECT txid_current()"
)
# A fast step's completion usually follows its start within a millisecond: waiting this long
# lets that awaited write take the start along, one transaction per step.
FLUSH_LINGER_S = 0.002

Queued = dict[int, tuple[Claim, list[NewEvent]]]


def same_claim(a: Claim, b: Claim) -> bool:
    # The fence's own terms: two claims of one epoch by different owners are different.
    return a.epoch == b.epoch and a.owner == b.owner


class QueuedEvents:
    def __init__(self, db: Database, appended: AppendSignal) -> None:
        self._db = db
        self._appended = appended
        self._queued: Queued = {}  # not yet taken by the flusher, per instance pk
        self._flusher: asyncio.Task[None] | None = None
        self._inflight: tuple[frozenset[int], asyncio.Future[None]] | None = None
        self._unsettled: dict[int, tuple[Claim, CommitUnknown]] = {}

    def add(self, claim: Claim, events: Sequence[NewEvent]) -> None:
        pk = claim.instance.pk
        queued = self._queued.get(pk)
        if queued is not None and same_claim(queued[0], claim):
            queued[1].extend(events)
        else:
            self._queued[pk] = (claim, list(events))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def take(self, claim: Claim) -> list[NewEvent]:
        """``claim``'s queued events, for its next awaited write to carry ahead of its own."""
        pk = claim.instance.pk
        await self.flushed(pk)
        unsettled = self._unsettled.pop(pk, None)
        if unsettled is not None and same_claim(unsettled[0], claim):
            raise CommitUnknown(str(unsettled[1])) from unsettled[1]
        queued = self._queued.pop(pk, None)
        if queued is None or not same_claim(queued[0], claim):
            return []
        return queued[1]

    async def flushed(self, instance_pk: int) -> None:
        """Until no flush under way holds the instance's events."""
        while self._inflight is not None and instance_pk in self._inflight[0]:
            await asyncio.shield(self._inflight[1])

    def pop(self, instance_pk: int) -> tuple[Claim, list[NewEvent]] | None:
        """Whatever claim's events are queued for the instance, for a write that fences it."""
        return self._queued.pop(instance_pk, None)

    def put_back(self, queued: Queued) -> None:
        """Queue ``queued`` again, ahead of what its claims queued since."""
        for pk, (claim, events) in queued.items():
            since = self._queued.get(pk)
            if since is None:
                self._queued[pk] = (claim, events)
            elif same_claim(since[0], claim):
                since[1][:0] = events
            # else a newer claim of the instance queued since: this one is fenced.

    async def drain(self) -> None:
        """Until the flusher has ended, its events written or not."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(FLUSH_LINGER_S)
        while self._queued:
            batch, self._queued = self._queued, {}
            done: asyncio.Future[None] = loop.create_future()
            self._inflight = (frozenset(batch), done)
            try:
                await self._db.write_reporting_xid(partial(_write, batch=batch), durable=False)
                self._appended.fire_many(batch)
            except CommitUnknown as exc:
                log.debug("queued history events may not have been written: %r", exc)
                for pk, (claim, _) in batch.items():
                    self._unsettled[pk] = (claim, exc)
            except Exception as exc:
                # Retried by the claims' next writes, not here: it would likely fail again.
                log.debug("queued history events were not written: %r", exc)
                self.put_back(batch)
                break
            finally:
                self._inflight = None
                done.set_result(None)


async def _write(conn: Any, *, batch: Queued) -> tuple[int, None]:
    rows = [(claim, e) for claim, events in batch.values() for e in events]
    xid = await conn.fetchval(
        _APPEND_BATCH,
        sorted(batch),
        [c.instance.pk for c, _ in rows],
        [c.epoch for c, _ in rows],
        *event_columns([e for _, e in rows]),
        [c.owner for c, _ in rows],
    )
    return int(xid), None
