"""Group commit of worker writes on PostgreSQL: concurrent step results (or activation ends) of
many instances share one statement, so one round trip and one WAL flush.

A write waits for the event loop to run what is ready, so that the writes of every activation
that stepped in the same turn leave together; while ``max_inflight`` statements are under way,
more queue up and leave together when one returns. A write alone goes as the one-instance
function. Each statement runs in its own implicit transaction and is resent after a lost
connection: the functions of migration 0013 (after 0003, 0004 and 0005) recognise what already
committed, and write only while the claim's epoch and lease owner both still hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from stepstone.storage.base import Claim, NewEvent, Release
from stepstone.storage.postgres_batch import Batcher, settle
from stepstone.storage.postgres_db import Database

W = TypeVar("W")  # what one call writes for its instance

# The functions of migration 0013: fenced by the lease owner as well as the epoch.
_ONE_PROGRESS = "SELECT stepstone_record_progress($1, $2, $3, $4, $5, $6, $7, $8, $9)"
_MANY_PROGRESS = (
    "SELECT r_pk, r_status FROM stepstone_record_progress_many($1, $2, $3, $4, $5, $6, $7, $8,"
    " $9, $10)"
)
_ONE_RELEASE = (
    "SELECT stepstone_release($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
    " $12, $13, $14, $15, $16, $17)"
)
_MANY_RELEASE = (
    "SELECT r_pk, r_status FROM stepstone_release_many($1, $2, $3, $4, $5, $6, $7, $8, $9,"
    " $10, $11, $12, $13, $14, $15, $16, $17, $18)"
)
_Entry = tuple[Claim, W, "asyncio.Future[str | None]"]
# (connection, retry, claim, write) -> the instance's status, None if fenced.
SendOne = Callable[[Any, bool, Claim, W], Awaitable[str | None]]
# (connection, retry, [(claim, write)]) -> {instance pk: status or None}.
SendMany = Callable[[Any, bool, list[tuple[Claim, W]]], Awaitable[dict[int, str | None]]]


class GroupCommitter(Batcher[_Entry[W]]):
    def __init__(self, db: Database, one: SendOne[W], many: SendMany[W], max_inflight: int) -> None:
        super().__init__(max_inflight)
        self._db = db
        self._one = one
        self._many = many
        self._sending: set[int] = set()

    async def write(self, claim: Claim, write: W) -> str | None:
        """Apply ``write`` fenced by ``claim``; the instance's status, None if fenced."""
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._enqueue_next_turn((claim, write, future))
        return await future

    def _take(self) -> list[_Entry[W]]:
        # One entry per instance, and none of an instance with a statement under way: a second
        # write of an instance waits for the first to return, so each instance's writes commit
        # in the order they were made.
        batch: dict[int, _Entry[W]] = {}
        later: list[_Entry[W]] = []
        for entry in self._queued:
            pk = entry[0].instance.pk
            if pk in batch or pk in self._sending:
                later.append(entry)
            else:
                batch[pk] = entry
        self._queued = later
        self._sending.update(batch)
        return list(batch.values())

    async def _send(self, batch: list[_Entry[W]]) -> None:
        try:
            await self._apply(batch)
        finally:
            self._sending.difference_update(claim.instance.pk for claim, _, _ in batch)

    async def _apply(self, batch: list[_Entry[W]]) -> None:
        writes = [(claim, write) for claim, write, _ in batch]
        futures = [future for _, _, future in batch]
        try:
            if len(writes) == 1:
                claim, write = writes[0]
                status = await self._db.idempotent(
                    lambda conn, retry: self._one(conn, retry, claim, write)
                )
                statuses = {claim.instance.pk: status}
            else:
                statuses = await self._db.idempotent(
                    lambda conn, retry: self._many(conn, retry, writes)
                )
        except Exception as exc:
            for future in futures:
                settle(future, exc)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        else:
            for claim, _, future in batch:
                settle(future, statuses.get(claim.instance.pk))


# --- step results ---------------------------------------------------------------------------


async def progress_one(
    conn: Any, retry: bool, claim: Claim, events: Sequence[NewEvent]
) -> str | None:
    status: str | None = await conn.fetchval(
        _ONE_PROGRESS, claim.instance.pk, claim.epoch, claim.owner, retry, *event_columns(events)
    )
    return status


async def progress_many(
    conn: Any, retry: bool, writes: list[tuple[Claim, Sequence[NewEvent]]]
) -> dict[int, str | None]:
    of, columns = _grouped(events for _, events in writes)
    rows = await conn.fetch(
        _MANY_PROGRESS,
        [claim.instance.pk for claim, _ in writes],
        [claim.epoch for claim, _ in writes],
        [claim.owner for claim, _ in writes],
        retry,
        of,
        *columns,
    )
    return {r[0]: r[1] for r in rows}


# --- activations' ends ----------------------------------------------------------------------

# A release: what it stores, its events (queued ones first) and when it was made.
Ending = tuple[Release, Sequence[NewEvent], int]


def release_sender(
    near_wake_ms: int, default_retention_ms: int
) -> tuple[SendOne[Ending], SendMany[Ending]]:
    async def one(conn: Any, retry: bool, claim: Claim, ending: Ending) -> str | None:
        r, events, now = ending
        status: str | None = await conn.fetchval(
            _ONE_RELEASE,
            claim.instance.pk,
            claim.epoch,
            claim.owner,
            claim.wake_seq,
            r.status,
            r.runnable_at,
            r.output,
            r.error,
            r.rollback,
            now,
            now + near_wake_ms,
            default_retention_ms,
            *event_columns(events),
        )
        return status

    async def many(
        conn: Any, retry: bool, writes: list[tuple[Claim, Ending]]
    ) -> dict[int, str | None]:
        of, columns = _grouped(events for _, (_, events, _) in writes)
        rows = await conn.fetch(
            _MANY_RELEASE,
            [claim.instance.pk for claim, _ in writes],
            [claim.epoch for claim, _ in writes],
            [claim.owner for claim, _ in writes],
            [claim.wake_seq for claim, _ in writes],
            [r.status for _, (r, _, _) in writes],
            [r.runnable_at for _, (r, _, _) in writes],
            [r.output for _, (r, _, _) in writes],
            [r.error for _, (r, _, _) in writes],
            [r.rollback for _, (r, _, _) in writes],
            [now for _, (_, _, now) in writes],
            near_wake_ms,
            default_retention_ms,
            of,
            *columns,
        )
        return {r[0]: r[1] for r in rows}

    return one, many


def event_columns(events: Sequence[NewEvent]) -> tuple[list[Any], ...]:
    """The events as the five parallel arrays the write functions take."""
    return (
        [e.ts for e in events],
        [e.type for e in events],
        [e.step_kind for e in events],
        [e.step_name for e in events],
        [e.data for e in events],
    )


def _grouped(event_lists: Any) -> tuple[list[int], tuple[list[Any], ...]]:
    """Many instances' events as one set of columns, with the 1-based owner of each."""
    of: list[int] = []
    ts: list[Any] = []
    types: list[Any] = []
    kinds: list[Any] = []
    names: list[Any] = []
    data: list[Any] = []
    for n, events in enumerate(event_lists, 1):
        for e in events:
            of.append(n)
            ts.append(e.ts)
            types.append(e.type)
            kinds.append(e.step_kind)
            names.append(e.step_name)
            data.append(e.data)
    return of, (ts, types, kinds, names, data)
