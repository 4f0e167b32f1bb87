"""The worker side of the SQLite store: claims, leases, fenced writes and the events a
worker records without waiting.

Every fenced write checks in its transaction that the claim's epoch, owner and instance id
still hold (``fenced_row``), so a worker whose lease was taken over records nothing. An
attempt's start is queued in memory (``record_progress_nowait``) for up to ``LINGER_S``: the
step's result, due in a moment, usually takes it into its own transaction; otherwise the next
write of the store carries it (``SqliteStorage._write``), and hands it back if that write fails.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from stepstone.model.events import EventType
from stepstone.model.statuses import TERMINAL, Status
from stepstone.storage import sqlite_children
from stepstone.storage.appended import AppendSignal
from stepstone.storage.base import (
    Claim,
    DeliveredEvent,
    Fenced,
    InstanceLinks,
    InstanceRecord,
    NewEvent,
    Release,
)
from stepstone.storage.event_match import first_match
from stepstone.storage.signals import Signals
from stepstone.storage.sql.rows import INSTANCE_COLUMNS
from stepstone.storage.sql.session import SqliteSession, run_to_end
from stepstone.storage.sql.transitions import expiry
from stepstone.storage.sqlite_writer import InlineWriter
from stepstone.storage.workflow_caps import sqlite_candidates, sqlite_caps, sqlite_running

T = TypeVar("T")

# How long an attempt's start may wait in memory for the write that usually follows it.
LINGER_S = 0.001


_INSERT_EVENTS = [
    "INSERT INTO instance_events (instance_pk, ts, type, step_kind, step_name, data) VALUES "
    + ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    for rows in range(1, 9)
]


def insert_events(conn: sqlite3.Connection, instance_pk: int, events: Sequence[NewEvent]) -> None:
    # One statement for up to eight rows (a step writes four): each execute costs more than a
    # row, and executemany more than a few executes. Rows keep their order, so their ids do.
    for start in range(0, len(events), 8):
        chunk = events[start : start + 8]
        values: list[Any] = []
        for e in chunk:
            values += (instance_pk, e.ts, e.type, e.step_kind, e.step_name, e.data)
        conn.execute(_INSERT_EVENTS[len(chunk) - 1], values)


_FENCE = "SELECT epoch, lease_owner, id, status, wake_seq FROM instances WHERE pk = ?"


def fenced_row(conn: sqlite3.Connection, claim: Claim) -> Any:
    """The claimed instance's ``(status, wake_seq)`` if ``claim`` still holds it, else Fenced.

    The epoch alone is not enough: the owner is compared as on PostgreSQL, and the id because
    SQLite gives a new row the pk of the newest deleted one, so a claim of a deleted instance
    could otherwise pass for a claim of the next one created.
    """
    row = conn.execute(_FENCE, (claim.instance.pk,)).fetchone()
    if row is None or (row[0], row[1], row[2]) != (claim.epoch, claim.owner, claim.instance.id):
        raise Fenced(claim.instance.id)
    return row[3:]


def check_fence(conn: sqlite3.Connection, claim: Claim) -> str:
    return str(fenced_row(conn, claim)[0])


class SqliteWorkerWrites(Signals):
    """What a worker does through the store; mixed into ``SqliteStorage``."""

    appended: AppendSignal
    # record_progress_nowait: events not yet written, per instance pk; since when the oldest
    # waits, and the timer that writes them at the latest.
    _queued: dict[int, tuple[Claim, list[NewEvent]]]
    _queued_since: float
    _flush_timer: asyncio.TimerHandle | None
    _writer: InlineWriter | None

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    def _write(
        self,
        job: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = True,
        wait: bool = True,
        wakes: bool = False,
        batched: bool = False,
    ) -> Any:
        raise NotImplementedError

    def _put_back(self, queued: dict[int, tuple[Claim, list[NewEvent]]]) -> None:
        """Queue ``queued`` again, ahead of what its claims queued since; the flush timer is
        left to the next queued events, so a failing disk is not retried in a loop."""
        if not self._queued:
            self._queued_since = asyncio.get_running_loop().time()
        for pk, (claim, events) in queued.items():
            since = self._queued.get(pk)
            if since is None:
                self._queued[pk] = (claim, events)
            elif since[0] is claim:
                since[1][:0] = events
            # else a newer claim of the instance queued since: this one is fenced.

    def _cancel_flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _linger_ended(self) -> None:
        """The flush timer: write what has lingered ``LINGER_S``, else wait for the oldest."""
        self._flush_timer = None
        if not self._queued:
            return
        loop = asyncio.get_running_loop()
        due = self._queued_since + LINGER_S
        if loop.time() < due:
            self._flush_timer = loop.call_at(due, self._linger_ended)
            return
        self._flush_queued()

    def _flush_queued(self) -> None:
        self._cancel_flush()
        if self._queued and self._writer is not None:
            done = self._write(lambda conn: None, durable=False)
            if done.done() and not done.cancelled():
                done.exception()  # retrieved: a lost write here is caught by the next one

    async def claim_runnable(
        self,
        owner: str,
        limit: int,
        now: int,
        lease_ms: int,
        workflow_pks: Sequence[int] | None,
        *,
        max_running: int | None = None,
    ) -> list[Claim]:
        if limit <= 0 or (workflow_pks is not None and not workflow_pks):
            return []
        scope = ""
        args: list[Any] = [owner, now + lease_ms, now, now, now, now]
        if workflow_pks is not None:
            # Unary + keeps the planner off instances_by_created: through it a claim would read
            # and sort every instance the workflows ever had (25 ms at 100,000 ended ones),
            # where the runnable index holds only the rows that may run.
            scope = f" AND +workflow_pk IN ({','.join('?' * len(workflow_pks))})"
            args.extend(workflow_pks)
        sql = (
            "UPDATE instances SET lease_owner = ?, lease_expires = ?, epoch = epoch + 1,"
            " status = CASE WHEN status IN ('queued', 'waiting') THEN 'running' ELSE status END,"
            " started_on = COALESCE(started_on, ?), modified_on = ?"
            " WHERE pk IN (SELECT pk FROM instances WHERE runnable_at <= ?"
            " AND (lease_expires IS NULL OR lease_expires < ?)"
            f"{scope} ORDER BY priority, runnable_at LIMIT ?)"
            f" RETURNING {INSTANCE_COLUMNS}, epoch, wake_seq"
        )
        capped_update = sql[: sql.index(" WHERE pk IN (")]

        def job(conn: sqlite3.Connection) -> list[Claim]:
            allowed = limit
            if max_running is not None:
                # The write transaction (one writer, BEGIN IMMEDIATE across processes)
                # serialises this count with the claim that follows it.
                running = conn.execute(
                    "SELECT count(*) FROM instances WHERE lease_owner IS NOT NULL"
                    " AND lease_expires >= ?",
                    (now,),
                ).fetchone()[0]
                allowed = min(limit, max(0, max_running - running))
                if allowed == 0:
                    return []
            caps = sqlite_caps(conn, workflow_pks)
            if caps:
                # The write transaction serialises these counts with the claim, as above.
                rooms = {pk: cap - sqlite_running(conn, pk, now) for pk, cap in caps.items()}
                picked, picked_args = sqlite_candidates(workflow_pks, caps, rooms, now, allowed)
                if not picked:
                    return []
                rows = conn.execute(
                    f"{capped_update} WHERE pk IN ({picked})"
                    f" RETURNING {INSTANCE_COLUMNS}, epoch, wake_seq",
                    [*args[:4], *picked_args],
                )
            else:
                rows = conn.execute(sql, [*args, allowed])
            claims = [Claim(InstanceRecord(*r[:19]), owner, r[19], r[20]) for r in rows]
            claims.sort(key=lambda c: c.instance.pk)
            return claims

        result: list[Claim] = await self._write(job, durable=False)
        return result

    async def renew_leases(
        self, owner: str, claims: Sequence[Claim], now: int, lease_ms: int
    ) -> dict[int, str | None]:
        def job(conn: sqlite3.Connection) -> dict[int, str | None]:
            held: dict[int, str | None] = {}
            for claim in claims:
                row = conn.execute(
                    "UPDATE instances SET lease_expires = ? WHERE pk = ? AND epoch = ?"
                    " AND lease_owner = ? RETURNING status",
                    (now + lease_ms, claim.instance.pk, claim.epoch, owner),
                ).fetchone()
                held[claim.instance.pk] = None if row is None else str(row[0])
            return held

        result: dict[int, str | None] = await self._write(job, durable=False)
        return result

    def _take_queued(self, claim: Claim) -> list[NewEvent]:
        """The events ``claim`` queued without waiting, now to be written with its next."""
        queued = self._queued.get(claim.instance.pk)
        if queued is None or queued[0] is not claim:
            return []
        del self._queued[claim.instance.pk]
        return queued[1]

    async def record_progress(self, claim: Claim, events: Sequence[NewEvent]) -> str:
        events = [*self._take_queued(claim), *events]

        def job(conn: sqlite3.Connection) -> str:
            status = check_fence(conn, claim)
            insert_events(conn, claim.instance.pk, events)
            return status

        result: str = await self._write(job, wait=False, batched=True)
        self.appended.fire(claim.instance.pk)
        return result

    def record_progress_nowait(self, claim: Claim, events: Sequence[NewEvent]) -> None:
        """Queued in memory for up to ``LINGER_S``: the step's result, due in a moment,
        usually takes them into its own transaction."""
        queued = self._queued.get(claim.instance.pk)
        if queued is not None and queued[0] is claim:
            queued[1].extend(events)
        else:
            if queued is not None:  # an older claim's: flush it first, in order
                self._flush_queued()
            if not self._queued:
                self._queued_since = asyncio.get_running_loop().time()
            self._queued[claim.instance.pk] = (claim, list(events))
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(LINGER_S, self._linger_ended)

    async def set_active_status(self, claim: Claim, status: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            check_fence(conn, claim)
            conn.execute(
                "UPDATE instances SET status = ? WHERE pk = ?", (status, claim.instance.pk)
            )

        await self._write(job)

    async def record_stream_chunk(
        self, claim: Claim, step_name: str, chunk_no: int, data: bytes
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            check_fence(conn, claim)
            if chunk_no == 0:
                conn.execute(
                    "DELETE FROM stream_chunks WHERE instance_pk = ? AND step_name = ?",
                    (claim.instance.pk, step_name),
                )
            conn.execute(
                "INSERT OR REPLACE INTO stream_chunks (instance_pk, step_name, chunk_no, data)"
                " VALUES (?, ?, ?, ?)",
                (claim.instance.pk, step_name, chunk_no, data),
            )

        await self._write(job)

    async def consume_event(
        self,
        claim: Claim,
        event_type: str,
        completion: NewEvent,
        match: Mapping[str, Any] | None = None,
    ) -> DeliveredEvent | None:
        def job(conn: sqlite3.Connection) -> DeliveredEvent | None:
            check_fence(conn, claim)
            rows = conn.execute(
                "SELECT seq, payload, ts FROM pending_events WHERE instance_pk = ? AND type = ?"
                " ORDER BY seq" + ("" if match else " LIMIT 1"),
                (claim.instance.pk, event_type),
            )
            row = first_match(rows, match)
            if row is None:
                return None
            conn.execute("DELETE FROM pending_events WHERE seq = ?", (row[0],))
            delivered = DeliveredEvent(event_type, bytes(row[1]), int(row[2]))
            data = orjson.loads(completion.data or b"{}")
            data["event"] = {
                "type": event_type,
                "payload": orjson.Fragment(delivered.payload),
                "timestamp": delivered.ts,
            }
            insert_events(
                conn,
                claim.instance.pk,
                [
                    NewEvent(
                        completion.type,
                        completion.ts,
                        orjson.dumps(data),
                        completion.step_kind,
                        completion.step_name,
                    )
                ],
            )
            return delivered

        result: DeliveredEvent | None = await self._write(job)
        if result is not None:
            self.appended.fire(claim.instance.pk)
        return result

    async def release_instance(self, claim: Claim, release: Release, now: int) -> str:
        r = release
        queued = self._take_queued(claim)

        def job(conn: sqlite3.Connection) -> str:
            current, wake_seq = fenced_row(conn, claim)
            status = r.status
            runnable_at = r.runnable_at
            paused_at = None
            if status == Status.WAITING and current == Status.WAITING_FOR_PAUSE:
                status, runnable_at, paused_at = Status.PAUSED, None, now
            elif status == Status.PAUSED:
                runnable_at, paused_at = None, now
            if status == Status.WAITING and wake_seq != claim.wake_seq:
                runnable_at = now
            ended = status in TERMINAL
            conn.execute(
                "UPDATE instances SET status = ?, runnable_at = ?, priority = 0,"
                " lease_owner = NULL, lease_expires = NULL, modified_on = ?,"
                " paused_at = COALESCE(?, paused_at), control = NULL,"
                " output = COALESCE(?, output), error = COALESCE(?, error),"
                " rollback = COALESCE(?, rollback),"
                " ended_on = CASE WHEN ? THEN ? ELSE ended_on END,"
                " expires_at = ? WHERE pk = ?",
                (
                    status,
                    runnable_at,
                    now,
                    paused_at,
                    r.output,
                    r.error,
                    r.rollback,
                    ended,
                    now,
                    run_to_end(expiry(SqliteSession(conn), claim.instance.pk, status, now))
                    if ended
                    else None,
                    claim.instance.pk,
                ),
            )
            events = [*queued, *r.events]
            if status == Status.PAUSED and r.status != Status.PAUSED:
                events.append(NewEvent(EventType.WORKFLOW_PAUSED, now))
            insert_events(conn, claim.instance.pk, events)
            return status

        ends = r.status in TERMINAL
        # An instance that ended leaves nothing to claim or to wait for: only watchers hear.
        result: str = await self._write(job, wakes=not ends, batched=True)
        self.appended.fire(claim.instance.pk)
        if ends:
            self._fire_change()
        return result

    async def link_child(
        self, claim: Claim, child_pk: int, *, detached: bool = False
    ) -> str | None:
        result: str | None = await self._write(
            lambda conn: sqlite_children.link_child(conn, claim, child_pk, detached)
        )
        return result

    async def instance_links(self, instance_pk: int) -> InstanceLinks:
        return self._read(lambda conn: sqlite_children.instance_links(conn, instance_pk))

    async def release_stopped(self, owner: str, instance_pk: int, epoch: int) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE instances SET lease_owner = NULL, lease_expires = NULL"
                " WHERE pk = ? AND epoch = ? AND lease_owner = ?",
                (instance_pk, epoch, owner),
            )

        await self._write(job, durable=False, wakes=True)

    async def next_wake_at(self, workflow_pks: Sequence[int] | None) -> int | None:
        if workflow_pks is not None and not workflow_pks:
            return None

        def read(conn: sqlite3.Connection) -> Any:
            scope, args = "", list(workflow_pks or ())
            if workflow_pks is not None:
                # As in claim_runnable: the wake index, not every instance of the workflows.
                scope = f" AND +workflow_pk IN ({','.join('?' * len(workflow_pks))})"
            full = [
                pk
                for pk, cap in sqlite_caps(conn, workflow_pks).items()
                if sqlite_running(conn, pk, None) >= cap
            ]
            if full:
                scope += f" AND +workflow_pk NOT IN ({','.join('?' * len(full))})"
                args.extend(full)
            return conn.execute(
                "SELECT runnable_at FROM instances WHERE runnable_at IS NOT NULL"
                f" AND lease_owner IS NULL{scope} ORDER BY runnable_at LIMIT 1",
                args,
            ).fetchone()

        row = self._read(read)
        return None if row is None or row[0] is None else int(row[0])

    async def concurrency_usage(self, workflow_pk: int, now: int) -> tuple[int, int]:
        def read(conn: sqlite3.Connection) -> tuple[int, int]:
            queued = conn.execute(
                "SELECT count(*) FROM instances WHERE workflow_pk = ? AND runnable_at <= ?"
                " AND (lease_expires IS NULL OR lease_expires < ?)",
                (workflow_pk, now, now),
            ).fetchone()[0]
            return sqlite_running(conn, workflow_pk, now), int(queued)

        return self._read(read)

    async def expire_leases(self, owner_prefix: str | None, now: int) -> int:
        def job(conn: sqlite3.Connection) -> int:
            if owner_prefix is None:
                cur = conn.execute(
                    "UPDATE instances SET lease_expires = ? - 1 WHERE lease_owner IS NOT NULL",
                    (now,),
                )
            else:
                cur = conn.execute(
                    "UPDATE instances SET lease_expires = ? - 1 WHERE lease_owner LIKE ? || '%'",
                    (now, owner_prefix),
                )
            return int(cur.rowcount)

        result: int = await self._write(job, durable=False, wakes=True)
        return result
