"""The worker side of the PostgreSQL store: claims, leases and fenced writes.

Claims lock rows with ``FOR UPDATE SKIP LOCKED``, so concurrent workers never wait on each
other's candidates. Every fenced write locks the instance row and compares the epoch in the same
transaction, so a worker whose lease was taken over records nothing. The fence is the epoch
and the lease owner together: a claim acknowledged by a primary that then failed can be lost
with it, and the same epoch handed to another worker by the promoted standby; the owner tells
the two holders apart (issue 19).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from stepstone.model.statuses import TERMINAL
from stepstone.storage.appended import AppendSignal
from stepstone.storage.base import (
    Claim,
    DeliveredEvent,
    EventRecord,
    Fenced,
    InstanceRecord,
    NewEvent,
    Release,
)
from stepstone.storage.event_match import first_match
from stepstone.storage.postgres_db import CHANNEL, CONTROL_CHANNEL, Database
from stepstone.storage.postgres_progress import Ending, GroupCommitter
from stepstone.storage.postgres_queue import QueuedEvents
from stepstone.storage.signals import Signals
from stepstone.storage.sql.rows import INSTANCE_FIELDS
from stepstone.storage.sql.session import PostgresSession
from stepstone.storage.sql.transitions import insert_events
from stepstone.storage.workflow_caps import pg_claim_sql, pg_plain_claim_sql

T = TypeVar("T")
# A release whose wake-up is this close notifies, so idle workers shorten their sleep to it.
NEAR_WAKE_MS = 60_000
log = logging.getLogger("stepstone.storage")


def instance_row(row: Sequence[Any]) -> InstanceRecord:
    return InstanceRecord(*row)


# Any fixed key, distinct from the migrations' one; the statement and its arguments.
CLAIM_LOCK = ("SELECT pg_advisory_xact_lock($1)", 0x5735_C1A1)
_CLAIM = pg_claim_sql(", ".join("i." + c for c in INSTANCE_FIELDS))
_CLAIM_PLAIN = pg_plain_claim_sql(", ".join("i." + c for c in INSTANCE_FIELDS))


async def notify(conn: Any) -> None:
    if conn.push_wakes:  # not in the portable mode (postgres_portable)
        await conn.execute(f"NOTIFY {CHANNEL}")


def control_payloads(stops: Sequence[tuple[int, int | None]]) -> list[str]:
    """``stops`` as control-channel payloads, each under PostgreSQL's 8000-byte limit."""
    payloads: list[str] = []
    items: list[str] = []
    size = 0
    for pk, epoch in stops:
        item = f"{pk}:{'' if epoch is None else epoch}"
        if items and size + len(item) + 1 > 7_000:
            payloads.append(",".join(items))
            items, size = [], 0
        items.append(item)
        size += len(item) + 1
    if items:
        payloads.append(",".join(items))
    return payloads


def parse_control(payload: str) -> list[tuple[int, int | None]]:
    stops: list[tuple[int, int | None]] = []
    for item in payload.split(","):
        pk, _, epoch = item.partition(":")
        if pk.isdigit():
            stops.append((int(pk), int(epoch) if epoch.isdigit() else None))
    return stops


async def notify_control(conn: Any, stops: Sequence[tuple[int, int | None]]) -> None:
    for payload in control_payloads(stops) if conn.push_wakes else ():
        await conn.execute("SELECT pg_notify($1, $2)", CONTROL_CHANNEL, payload)


class WorkerWrites(Signals):
    """What a worker does through the store; mixed into ``PostgresStorage``."""

    _db: Database
    _lease_db: Database
    appended: AppendSignal
    _queued: QueuedEvents  # record_progress_nowait's
    _progress: GroupCommitter[Sequence[NewEvent]]
    _releases: GroupCommitter[Ending]
    # Workflow pks with a concurrency limit, as the last claim saw them.
    _caps_seen: set[int]
    push_wakes: bool
    # Advisory locks, or row locks in the portable mode (postgres_portable).
    _claim_lock: tuple[Any, ...]
    _lock_caps: str

    def _on_control_payload(self, payload: str) -> None:
        self._fire_control(parse_control(payload))

    async def _write(self, job: Callable[[Any], Awaitable[T]], *, wakes: bool = False) -> T:
        result = await self._db.write(job)
        if wakes:
            # Local workers need not wait for the notification's round trip.
            self._fire_wake()
        return result

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
        claims, _, _ = await self._claim(owner, limit, now, lease_ms, workflow_pks, max_running)
        return claims

    async def claim_and_next_wake(
        self,
        owner: str,
        limit: int,
        now: int,
        lease_ms: int,
        workflow_pks: Sequence[int] | None,
        *,
        max_running: int | None = None,
    ) -> tuple[list[Claim], int | None]:
        claims, ahead, known = await self._claim(
            owner, limit, now, lease_ms, workflow_pks, max_running
        )
        if len(claims) >= limit:
            return claims, None
        if not known:
            # A capped workflow in scope: whether it is full needs the claim's own leases.
            return claims, await self.next_wake_at(workflow_pks)
        return claims, ahead

    async def _claim(
        self,
        owner: str,
        limit: int,
        now: int,
        lease_ms: int,
        workflow_pks: Sequence[int] | None,
        max_running: int | None,
    ) -> tuple[list[Claim], int | None, bool]:
        """The claims, the next wake-up among what they left, and whether the statement could
        tell it (the plain statement, with no cap in scope)."""
        if limit <= 0 or (workflow_pks is not None and not workflow_pks):
            return [], None, True
        scope = None if workflow_pks is None else list(workflow_pks)
        in_scope = None if scope is None else set(scope)
        # The capped workflows the last claim saw; their locks come first, in a statement of
        # their own, so the claim's snapshot holds every claim committed under them.
        locked = sorted(pk for pk in self._caps_seen if in_scope is None or pk in in_scope)

        def taken(rows: Sequence[Any], plain: bool) -> tuple[list[Claim], int | None, bool]:
            claims = [
                Claim(
                    instance_row(r[:19]),
                    owner,
                    r[19],
                    r[20],
                    None if r[21] is None else [EventRecord(*e) for e in r[21]],
                )
                for r in rows
                if r[22] is None
            ]
            last = next(r for r in rows if r[22] is not None)
            seen = last[22]
            # A workflow capped since the last look was left alone this time; the next claim
            # locks it (taking it now, after the others, could deadlock with another claimer).
            if in_scope is None:
                self._caps_seen = set(seen)
            else:
                self._caps_seen = (self._caps_seen - in_scope) | set(seen)
            known = plain and not seen
            return claims, (last[24] if known else None), known

        # Claims commit durably (they wait for the WAL flush, and for the synchronous
        # standby): a claim acknowledged and then lost with a failed primary would leave its
        # holder running while the promoted standby hands the instance out again. Measured
        # cost: about 0.3 ms a claim statement (docs/scaling.md).
        if max_running is None and not locked:
            # One statement in its own implicit transaction: one round trip, BEGIN and COMMIT
            # included. If its answer is lost it is simply sent again: what a lost try claimed
            # stays leased to this owner, unseen, until the lease expires, and is then claimed
            # again at a new epoch (a delay for those instances, never a second holder).
            async def plain(conn: Any, _retry: bool) -> tuple[list[Claim], int | None, bool]:
                rows = await conn.fetch(_CLAIM_PLAIN, owner, now + lease_ms, now, limit, scope)
                return taken(rows, True)

            claims, ahead, known = await self._db.idempotent(plain)
            claims.sort(key=lambda c: c.instance.pk)
            return claims, ahead, known

        async def job(conn: Any) -> tuple[int | None, tuple[list[Claim], int | None, bool]]:
            allowed = limit
            if max_running is not None:
                # Workers count and claim one at a time, or two could both see room for one.
                await conn.execute(*self._claim_lock)
                running = await conn.fetchval(
                    "SELECT count(*) FROM instances WHERE lease_owner IS NOT NULL"
                    " AND lease_expires >= $1",
                    now,
                )
                allowed = min(limit, max(0, max_running - running))
                if allowed == 0:
                    return None, ([], None, False)
            if locked:
                await conn.execute(self._lock_caps, locked)
                rows = await conn.fetch(_CLAIM, owner, now + lease_ms, now, allowed, scope, locked)
            else:
                rows = await conn.fetch(_CLAIM_PLAIN, owner, now + lease_ms, now, allowed, scope)
            found = taken(rows, not locked)
            return (rows[0][23] if found[0] else None), found

        claims, ahead, known = await self._db.write_reporting_xid(job)
        claims.sort(key=lambda c: c.instance.pk)
        return claims, ahead, known

    async def renew_leases(
        self, owner: str, claims: Sequence[Claim], now: int, lease_ms: int
    ) -> dict[int, str | None]:
        if not claims:
            return {}

        async def job(conn: Any) -> dict[int, str | None]:
            # Rows locked in pk order, as group-committed step results lock them: in any
            # other order the two could deadlock.
            rows = await conn.fetch(
                "WITH held AS (SELECT i.pk FROM instances i"
                " JOIN unnest($2::bigint[], $3::bigint[]) AS c(pk, epoch)"
                " ON i.pk = c.pk AND i.epoch = c.epoch WHERE i.lease_owner = $4"
                " ORDER BY i.pk FOR UPDATE OF i)"
                " UPDATE instances i SET lease_expires = $1 FROM held WHERE i.pk = held.pk"
                " RETURNING i.pk, i.status",
                now + lease_ms,
                [c.instance.pk for c in claims],
                [c.epoch for c in claims],
                owner,
            )
            held: dict[int, str | None] = {c.instance.pk: None for c in claims}
            held.update({r[0]: str(r[1]) for r in rows})
            return held

        return await self._lease_db.write(job)

    # Fenced writes. Each first takes what record_progress_nowait queued of its claim
    # (postgres_queue), so a claim's writes commit in the order they were made.

    def record_progress_nowait(self, claim: Claim, events: Sequence[NewEvent]) -> None:
        self._queued.add(claim, events)

    async def _fenced(
        self,
        claim: Claim,
        fn: Callable[[Any, Any], Awaitable[T]],
        *,
        wakes: bool = False,
    ) -> T:
        earlier = await self._queued.take(claim)
        pk = claim.instance.pk

        async def job(conn: Any) -> T:
            row = await conn.fetchrow(
                "SELECT epoch, status, wake_seq, lease_owner FROM instances WHERE pk = $1"
                " FOR UPDATE",
                pk,
            )
            if row is None or row[0] != claim.epoch or row[3] != claim.owner:
                raise Fenced(claim.instance.id)
            await insert_events(PostgresSession(conn), pk, earlier)
            return await fn(conn, row)

        result = await self._write(job, wakes=wakes)
        self.appended.fire(pk)
        return result

    async def record_progress(self, claim: Claim, events: Sequence[NewEvent]) -> str:
        # The hot path of every step: shares one statement, in its own transaction, with the
        # progress of other instances recorded at the same time.
        status = await self._progress.write(claim, [*await self._queued.take(claim), *events])
        if status is None:
            raise Fenced(claim.instance.id)
        self.appended.fire(claim.instance.pk)
        return status

    async def set_active_status(self, claim: Claim, status: str) -> None:
        async def fn(conn: Any, row: Any) -> None:
            await conn.execute(
                "UPDATE instances SET status = $1 WHERE pk = $2", status, claim.instance.pk
            )

        await self._fenced(claim, fn)

    async def record_stream_chunk(
        self, claim: Claim, step_name: str, chunk_no: int, data: bytes
    ) -> None:
        pk = claim.instance.pk

        async def fn(conn: Any, row: Any) -> None:
            if chunk_no == 0:
                await conn.execute(
                    "DELETE FROM stream_chunks WHERE instance_pk = $1 AND step_name = $2",
                    pk,
                    step_name,
                )
            await conn.execute(
                "INSERT INTO stream_chunks (instance_pk, step_name, chunk_no, data)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (instance_pk, step_name, chunk_no)"
                " DO UPDATE SET data = excluded.data",
                pk,
                step_name,
                chunk_no,
                data,
            )

        await self._fenced(claim, fn)

    async def consume_event(
        self,
        claim: Claim,
        event_type: str,
        completion: NewEvent,
        match: Mapping[str, Any] | None = None,
    ) -> DeliveredEvent | None:
        pk = claim.instance.pk

        async def fn(conn: Any, row: Any) -> DeliveredEvent | None:
            if match:
                found = await _take_matching(conn, pk, event_type, match)
            else:
                found = await conn.fetchrow(
                    "DELETE FROM pending_events WHERE seq = (SELECT seq FROM pending_events"
                    " WHERE instance_pk = $1 AND type = $2 ORDER BY seq LIMIT 1)"
                    " RETURNING payload, ts",
                    pk,
                    event_type,
                )
            if found is None:
                return None
            delivered = DeliveredEvent(event_type, bytes(found[0]), int(found[1]))
            data = orjson.loads(completion.data or b"{}")
            data["event"] = {
                "type": event_type,
                "payload": orjson.Fragment(delivered.payload),
                "timestamp": delivered.ts,
            }
            event = NewEvent(
                completion.type,
                completion.ts,
                orjson.dumps(data),
                completion.step_kind,
                completion.step_name,
            )
            await insert_events(PostgresSession(conn), pk, [event])
            return delivered

        return await self._fenced(claim, fn)

    async def release_instance(self, claim: Claim, release: Release, now: int) -> str:
        # Shares one statement with other activations ending at the same time.
        events = [*await self._queued.take(claim), *release.events]
        status = await self._releases.write(claim, (release, events, now))
        if status is None:
            raise Fenced(claim.instance.id)
        self.appended.fire(claim.instance.pk)
        # Local workers hear of every release that leaves something to claim or to wait for,
        # watchers of every release; other processes only when the instance is due soon. An
        # end may wake a parent, which the trigger announces unless it is silenced (portable).
        if status in TERMINAL and self.push_wakes:
            self._fire_change()
        else:
            self._fire_wake()
        return status

    async def release_stopped(self, owner: str, instance_pk: int, epoch: int) -> None:
        async def job(conn: Any) -> None:
            done = await conn.execute(
                "UPDATE instances SET lease_owner = NULL, lease_expires = NULL"
                " WHERE pk = $1 AND epoch = $2 AND lease_owner = $3",
                instance_pk,
                epoch,
                owner,
            )
            if done.split()[-1] != "0":
                await notify(conn)

        await self._write(job, wakes=True)

    async def next_wake_at(self, workflow_pks: Sequence[int] | None) -> int | None:
        if workflow_pks is not None and not workflow_pks:
            return None
        scope = None if workflow_pks is None else list(workflow_pks)
        value = await self._db.read(
            lambda c: c.fetchval(
                "WITH full_ AS (SELECT w.pk FROM workflows w WHERE w.concurrency_limit IS NOT NULL"
                " AND ($1::bigint[] IS NULL OR w.pk = ANY($1::bigint[]))"
                " AND (SELECT count(*) FROM instances l WHERE l.workflow_pk = w.pk"
                " AND l.lease_owner IS NOT NULL) >= w.concurrency_limit)"
                " SELECT runnable_at FROM instances WHERE runnable_at IS NOT NULL"
                " AND lease_owner IS NULL"
                " AND ($1::bigint[] IS NULL OR workflow_pk = ANY($1::bigint[]))"
                " AND workflow_pk <> ALL(ARRAY(SELECT pk FROM full_))"
                " ORDER BY runnable_at LIMIT 1",
                scope,
            )
        )
        return None if value is None else int(value)

    async def concurrency_usage(self, workflow_pk: int, now: int) -> tuple[int, int]:
        row = await self._db.read(
            lambda c: c.fetchrow(
                "SELECT (SELECT count(*) FROM instances WHERE workflow_pk = $1"
                " AND lease_owner IS NOT NULL AND lease_expires >= $2),"
                " (SELECT count(*) FROM instances WHERE workflow_pk = $1 AND runnable_at <= $2"
                " AND (lease_expires IS NULL OR lease_expires < $2))",
                workflow_pk,
                now,
            )
        )
        return int(row[0]), int(row[1])

    async def expire_leases(self, owner_prefix: str | None, now: int) -> int:
        async def job(conn: Any) -> int:
            done = await conn.execute(
                "UPDATE instances SET lease_expires = $1::bigint - 1 WHERE lease_owner IS NOT NULL"
                " AND ($2::text IS NULL OR starts_with(lease_owner, $2))",
                now,
                owner_prefix,
            )
            count = int(done.split()[-1])
            if count:
                await notify(conn)
            return count

        return await self._write(job, wakes=True)


async def _take_matching(
    conn: Any, pk: int, event_type: str, match: Mapping[str, Any]
) -> tuple[bytes, int] | None:
    """Delete the oldest buffered event of the type whose payload matches; the instance row
    is locked, so no other consumer races this one."""
    rows = await conn.fetch(
        "SELECT seq, payload, ts FROM pending_events WHERE instance_pk = $1 AND type = $2"
        " ORDER BY seq",
        pk,
        event_type,
    )
    found = first_match(rows, match)
    if found is None:
        return None
    await conn.execute("DELETE FROM pending_events WHERE seq = $1", found[0])
    return bytes(found[1]), int(found[2])
