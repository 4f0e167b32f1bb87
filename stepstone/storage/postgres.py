"""The scale-out store: PostgreSQL through asyncpg, shared by any number of workers.

Same semantics and schema as the SQLite reference store. What differs: claims lock rows with
``FOR UPDATE SKIP LOCKED`` so concurrent workers never wait on each other; each fenced write
locks the instance row and checks the epoch in its own transaction; writes that make work
runnable ``NOTIFY`` the wake channel (but in the portable mode, ``postgres_portable``); and
transactions survive lost connections (see ``postgres_db``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson

from stepstone.errors import CannotSendEvent
from stepstone.model.retention import DEFAULT_RETENTION_MS
from stepstone.model.statuses import TERMINAL
from stepstone.storage import postgres_children
from stepstone.storage.appended import AppendSignal
from stepstone.storage.base import (
    Claim,
    EventRecord,
    InstanceLinks,
    Transition,
    WorkflowDefinition,
    WorkflowRecord,
    check_jurisdiction,
)
from stepstone.storage.outage import StoreHealth
from stepstone.storage.postgres_creates import CreateBatcher, PostgresCreates
from stepstone.storage.postgres_db import Database, Listener
from stepstone.storage.postgres_portable import CLAIM_ROW_LOCK, LOCK_CAP_ROWS, NEVER_NEAR_MS
from stepstone.storage.postgres_progress import (
    GroupCommitter,
    progress_many,
    progress_one,
    release_sender,
)
from stepstone.storage.postgres_queue import QueuedEvents
from stepstone.storage.postgres_reads import ReadBatcher
from stepstone.storage.postgres_worker import (
    CLAIM_LOCK,
    NEAR_WAKE_MS,
    WorkerWrites,
    notify,
    notify_control,
)
from stepstone.storage.sql import transitions
from stepstone.storage.sql.catalog import SqlCatalog
from stepstone.storage.sql.credentials import SqlCredentials
from stepstone.storage.sql.dialect import POSTGRES
from stepstone.storage.sql.instances import SqlInstanceReads
from stepstone.storage.sql.ops_log import SqlOpsLog
from stepstone.storage.sql.rows import VERSION_COLUMNS, WORKFLOW_SELECT, workflow_row
from stepstone.storage.sql.session import Job, PostgresSession, on_postgres
from stepstone.storage.sql.webhooks import SqlWebhooks, drop_workflow_hooks
from stepstone.storage.workflow_caps import PG_LOCK_CAPS

T = TypeVar("T")


async def _delete_instance_rows(conn: Any, pks: Sequence[int]) -> None:
    if pks:
        await postgres_children.unlink_deleted(conn, pks)
        for table in ("instance_events", "pending_events", "stream_chunks"):
            await conn.execute(f"DELETE FROM {table} WHERE instance_pk = ANY($1::bigint[])", pks)
        await conn.execute("DELETE FROM instances WHERE pk = ANY($1::bigint[])", pks)


class PostgresStorage(
    WorkerWrites,
    PostgresCreates,
    SqlCatalog,
    SqlInstanceReads,
    SqlCredentials,
    SqlOpsLog,
    SqlWebhooks,
):
    """``Storage`` on PostgreSQL; any number of processes may share one database.

    ``portable``: without LISTEN/NOTIFY and advisory locks (``postgres_portable``).
    ``retry_for``: how long, in seconds, a write waits for an unreachable database before it
    fails as an outage."""

    dialect = POSTGRES

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        portable: bool = False,
        retry_for: float = 120.0,
    ) -> None:
        self.url = url
        # One account of outages for every connection of the store (pool, leases, listener).
        self.health = StoreHealth("PostgreSQL")
        self._db = Database(
            url,
            min_size=min_connections,
            max_size=max_connections,
            retry_for=retry_for,
            health=self.health,
            portable=portable,
        )
        # Lease renewals get a connection of their own: queued behind a busy pool they could
        # arrive after the lease ended and hand running instances to another worker.
        self._lease_db = Database(
            url, min_size=1, max_size=1, health=self.health, portable=portable
        )
        self.push_wakes = not portable
        self._claim_lock = CLAIM_ROW_LOCK if portable else CLAIM_LOCK
        self._lock_caps = LOCK_CAP_ROWS if portable else PG_LOCK_CAPS
        self._opened = False
        self._init_signals()
        # A create notifies under this store's origin: other processes wake, while its own
        # listener skips it, the create having woken the local workers a round trip earlier.
        self._origin = uuid.uuid4().hex
        self._init_creates(self._origin if self.push_wakes else None)
        self._listener: Listener | None = None
        self._caps_seen: set[int] = set()
        # Half the pool: claims, creates and reads keep connections of their own.
        self._progress = GroupCommitter(
            self._db, progress_one, progress_many, max_inflight=max(1, max_connections // 2)
        )
        self._releases = GroupCommitter(
            self._db,
            *release_sender(
                NEAR_WAKE_MS if self.push_wakes else NEVER_NEAR_MS, DEFAULT_RETENTION_MS
            ),
            max_inflight=max(1, max_connections // 2),
        )
        self._creates = CreateBatcher(
            self._create_alone, self._insert_instances, max_inflight=max(1, max_connections // 2)
        )
        self._workflow_reads: ReadBatcher[tuple[str, str], WorkflowRecord | None] = ReadBatcher(
            self._get_workflow, self._get_workflows, None, max(1, max_connections // 2)
        )
        self._history_reads: ReadBatcher[int, list[EventRecord]] = ReadBatcher(
            self._events_after, self._histories, [], max(1, max_connections // 2)
        )
        self.appended = AppendSignal(self._latest_event_ids)
        self._queued = QueuedEvents(self._db, self.appended)

    # --- connections ------------------------------------------------------------------------

    async def open(self) -> None:
        if self._opened:
            return
        await self._db.start()
        await self._db.migrate()
        await self._lease_db.start()
        self._opened = True
        if self._wake_listeners or self._change_listeners or self._control_listeners:
            self._start_listener()

    async def close(self) -> None:
        if not self._opened:
            return
        self.appended.stop()
        await self._queued.drain()
        await self._progress.drain()
        await self._releases.drain()
        await self._creates.drain()
        await self._workflow_reads.drain()
        await self._history_reads.drain()
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        await self._lease_db.close()
        await self._db.close()
        self._opened = False

    async def _sql_read(self, job: Job[T]) -> T:
        return await self._db.read(on_postgres(job))

    async def _sql_write(self, job: Job[T]) -> T:
        return await self._write(on_postgres(job))

    async def sync(self) -> None:
        """Nothing to wait for: every write that must be durable commits synchronously."""

    def sole_worker_lock(self) -> bool:
        # Workers on other machines cannot be ruled out; leases expire on their own.
        return False

    def add_wake_listener(self, callback: Any) -> None:
        super().add_wake_listener(callback)
        if self._opened:
            self._start_listener()

    def add_change_listener(self, callback: Any) -> None:
        # Notifications cover both: a wake, and the end of an instance.
        super().add_change_listener(callback)
        if self._opened:
            self._start_listener()

    def add_control_listener(self, callback: Any) -> None:
        super().add_control_listener(callback)
        if self._opened:
            self._start_listener()

    def _start_listener(self) -> None:
        if self._listener is None and self.push_wakes:
            self._listener = Listener(
                self.url,
                self._fire_wake,
                health=self.health,
                on_control=self._on_control_payload,
                own_origin=self._origin,
            )
            self._listener.start()

    # --- workflows and versions -------------------------------------------------------------

    async def register_workflow(
        self, account_id: str, name: str, definition: WorkflowDefinition, now: int
    ) -> WorkflowRecord:
        version_id = str(uuid.uuid4())

        async def job(conn: Any) -> None:
            # An upsert, so workers starting together on a new database do not collide.
            # The jurisdiction is read under the row's lock before it may be set; a change
            # raises and rolls the registration back.
            stored = await conn.fetchrow(
                "SELECT jurisdiction FROM workflows WHERE account_id = $1 AND name = $2 FOR UPDATE",
                account_id,
                name,
            )
            check_jurisdiction(stored["jurisdiction"] if stored else None, definition.jurisdiction)
            workflow_pk, jurisdiction = await conn.fetchrow(
                "INSERT INTO workflows (account_id, name, id, version_id, created_on,"
                " modified_on, concurrency_limit, jurisdiction)"
                " VALUES ($1, $2, $3, $4, $5, $5, $6, $7)"
                " ON CONFLICT (account_id, name) DO UPDATE SET version_id = excluded.version_id,"
                " modified_on = excluded.modified_on,"
                " concurrency_limit = excluded.concurrency_limit,"
                " jurisdiction = COALESCE(workflows.jurisdiction, excluded.jurisdiction)"
                " RETURNING pk, jurisdiction",
                account_id,
                name,
                str(uuid.uuid4()),
                version_id,
                now,
                definition.concurrency_limit,
                definition.jurisdiction,
            )
            # A concurrent first registration may have won the insert.
            check_jurisdiction(jurisdiction, definition.jurisdiction)
            await conn.execute(
                f"INSERT INTO versions ({VERSION_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                version_id,
                workflow_pk,
                definition.class_name,
                definition.script_name,
                now,
                definition.limits_steps,
                definition.success_retention_ms,
                definition.error_retention_ms,
                orjson.dumps(list(definition.schedules)),
                definition.language,
                definition.concurrency_limit,
            )

        await self._write(job, wakes=True)
        found = await self.get_workflow(account_id, name)
        assert found is not None
        return found

    async def get_workflow(self, account_id: str, name: str) -> WorkflowRecord | None:
        return await self._workflow_reads.get((account_id, name))

    async def _get_workflow(self, key: tuple[str, str]) -> WorkflowRecord | None:
        return await SqlCatalog.get_workflow(self, *key)

    async def _get_workflows(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], WorkflowRecord | None]:
        rows = await self._db.read(
            lambda c: c.fetch(
                f"{WORKFLOW_SELECT} WHERE (w.account_id, w.name) IN"
                " (SELECT * FROM unnest($1::text[], $2::text[]))",
                [k[0] for k in keys],
                [k[1] for k in keys],
            )
        )
        found = (workflow_row(row) for row in rows)
        return {(w.account_id, w.name): w for w in found}

    async def delete_workflow(self, account_id: str, name: str) -> bool:
        async def job(conn: Any) -> bool:
            workflow_pk = await conn.fetchval(
                "DELETE FROM workflows WHERE account_id = $1 AND name = $2 RETURNING pk",
                account_id,
                name,
            )
            if workflow_pk is None:
                return False
            pks = await conn.fetch(
                "SELECT pk, lease_owner FROM instances WHERE workflow_pk = $1 FOR UPDATE",
                workflow_pk,
            )
            await _delete_instance_rows(conn, [r[0] for r in pks])
            await drop_workflow_hooks(PostgresSession(conn), workflow_pk)
            await conn.execute("DELETE FROM versions WHERE workflow_pk = $1", workflow_pk)
            gone[:] = [(r[0], None) for r in pks if r[1] is not None]
            await notify_control(conn, gone)
            return True

        gone: list[tuple[int, int | None]] = []
        # A parent waiting on a deleted child is woken (unlink_deleted); without notifications
        # only this process's workers hear of it at once.
        deleted = await self._write(job, wakes=not self.push_wakes)
        self._fire_control(gone)
        return deleted

    # --- instances -------------------------------------------------------------------------

    async def load_events(
        self, instance_pk: int, after_event_id: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        if after_event_id == 0 and limit is None:  # a whole history: an activation starting
            return await self._history_reads.get(instance_pk)
        return await self._events_after(instance_pk, after_event_id, limit)

    async def _histories(self, pks: Sequence[int]) -> dict[int, list[EventRecord]]:
        rows = await self._db.read(
            lambda c: c.fetch(
                "SELECT instance_pk, event_id, ts, type, step_kind, step_name, data"
                " FROM instance_events WHERE instance_pk = ANY($1::bigint[])"
                " ORDER BY instance_pk, event_id",
                list(pks),
            )
        )
        histories: dict[int, list[EventRecord]] = {pk: [] for pk in pks}
        for r in rows:
            histories[r[0]].append(EventRecord(*r[1:]))
        return histories

    async def transition_instance(
        self, instance_pk: int, expected_status: str, transition: Transition, now: int
    ) -> None:
        t = transition
        # A stop must see the attempt the user's code is running: its start, queued in this
        # process and not yet flushed, commits first in this transaction (as on SQLite).
        await self._queued.flushed(instance_pk)
        queued = self._queued.pop(instance_pk) if t.release_worker else None

        async def job(conn: Any) -> int | None:
            s = PostgresSession(conn)
            row = await transitions.held_in(s, POSTGRES, instance_pk, expected_status)
            if queued is not None and (queued[0].epoch, queued[0].owner) == (row[1], row[2]):
                await transitions.insert_events(s, instance_pk, queued[1])
            await transitions.apply(s, POSTGRES, instance_pk, t, now)
            if t.runnable:
                await notify(conn)
            if not t.release_worker or row[2] is None:
                return None
            epoch = int(row[1]) + 1
            await notify_control(conn, [(instance_pk, epoch)])
            return epoch

        try:
            # An end may wake a parent: the trigger's notification is off in the portable mode.
            epoch = await self._write(job, wakes=t.runnable or (t.ended and not self.push_wakes))
            self.appended.fire(instance_pk)
        except BaseException:
            if queued is not None:  # not written: back to the front of the queue
                self._queued.put_back({instance_pk: queued})
            raise
        if epoch is not None:
            # Local workers need not wait for the notification's round trip.
            self._fire_control([(instance_pk, epoch)])

    async def link_child(
        self, claim: Claim, child_pk: int, *, detached: bool = False
    ) -> str | None:
        async def fn(conn: Any, row: Any) -> str | None:
            return await postgres_children.link_child(conn, claim.instance.pk, child_pk, detached)

        return await self._fenced(claim, fn)

    async def instance_links(self, instance_pk: int) -> InstanceLinks:
        return await self._db.read(lambda c: postgres_children.instance_links(c, instance_pk))

    async def delete_instances(self, workflow_pk: int, instance_ids: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(instance_ids))

        async def job(conn: Any) -> list[str]:
            rows = await conn.fetch(
                "SELECT pk, id, lease_owner FROM instances WHERE workflow_pk = $1"
                " AND id = ANY($2::text[]) ORDER BY pk FOR UPDATE",
                workflow_pk,
                wanted,
            )
            await _delete_instance_rows(conn, [r[0] for r in rows])
            gone[:] = [(r[0], None) for r in rows if r[2] is not None]
            await notify_control(conn, gone)
            found = {r[1] for r in rows}
            return [i for i in wanted if i in found]

        gone: list[tuple[int, int | None]] = []
        # A parent waiting on a deleted child is woken (unlink_deleted); without notifications
        # only this process's workers hear of it at once.
        deleted = await self._write(job, wakes=not self.push_wakes)
        self._fire_control(gone)
        return deleted

    async def deliver_event(
        self, instance_pk: int, event_type: str, payload: bytes, now: int
    ) -> bool:
        async def job(conn: Any) -> bool:
            status = await conn.fetchval(
                "SELECT status FROM instances WHERE pk = $1 FOR UPDATE", instance_pk
            )
            if status is None:
                return False
            if status in TERMINAL:
                raise CannotSendEvent(f"Cannot send an event to an instance that is {status}")
            await conn.execute(
                "INSERT INTO pending_events (instance_pk, type, payload, ts)"
                " VALUES ($1, $2, $3, $4)",
                instance_pk,
                event_type,
                payload,
                now,
            )
            # Paused and queued instances keep their schedule; the event waits in the buffer.
            await conn.execute(
                "UPDATE instances SET wake_seq = wake_seq + 1,"
                " runnable_at = CASE WHEN status IN ('waiting', 'running', 'waitingForPause',"
                " 'rollingBack') THEN $2 ELSE runnable_at END,"
                " priority = CASE WHEN status = 'waiting' THEN 0 ELSE priority END"
                " WHERE pk = $1",
                instance_pk,
                now,
            )
            await notify(conn)
            return True

        return await self._write(job, wakes=True)

    # --- retention -------------------------------------------------------------------------

    async def delete_expired(self, now: int, limit: int) -> int:
        async def job(conn: Any) -> int:
            rows = await conn.fetch(
                "SELECT pk FROM instances WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED",
                now,
                limit,
            )
            await _delete_instance_rows(conn, [r[0] for r in rows])
            return len(rows)

        deleted = await self._write(job)
        if deleted < limit:
            # The sweep's last batch: commit marks too old to be looked for go too (issue 19).
            await self._db.forget_marks()
        return deleted
