"""The embedded default store: one SQLite file (or memory), WAL, group-committed writes.

Writes go through ``InlineWriter`` (each in its own transaction on the caller's thread; at
``synchronous=FULL`` acknowledged once a ``WalSyncer`` thread has synced the WAL). Reads run on
the caller's thread on a per-thread connection, which WAL lets proceed during a write. The
in-memory store is the same code on one shared ``:memory:`` connection guarded by a lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import orjson

from stepstone.errors import CannotSendEvent, InstanceAlreadyExists
from stepstone.model.events import EventType
from stepstone.model.statuses import TERMINAL, Status
from stepstone.storage import sqlite_children, sqlite_webhooks
from stepstone.storage.appended import AppendSignal
from stepstone.storage.base import (
    Claim,
    Fenced,
    InstanceRecord,
    NewEvent,
    NewInstance,
    SeparateLookAhead,
    Transition,
    WorkflowChanged,
    WorkflowDefinition,
    WorkflowRecord,
    check_jurisdiction,
)
from stepstone.storage.migrations import apply_sqlite_migrations
from stepstone.storage.outage import StoreHealth
from stepstone.storage.sql import transitions
from stepstone.storage.sql.catalog import SqlCatalog
from stepstone.storage.sql.credentials import SqlCredentials
from stepstone.storage.sql.dialect import SQLITE
from stepstone.storage.sql.instances import SqlInstanceReads
from stepstone.storage.sql.ops_log import SqlOpsLog
from stepstone.storage.sql.rows import VERSION_COLUMNS
from stepstone.storage.sql.session import Job, Session, SqliteSession, on_sqlite, run_to_end
from stepstone.storage.sql.webhooks import SqlWebhooks, drop_workflow_hooks
from stepstone.storage.sqlite_worker import SqliteWorkerWrites, check_fence, insert_events
from stepstone.storage.sqlite_writer import InlineWriter, WalSyncer, preallocate_wal

T = TypeVar("T")


def _delete_instance_rows(conn: sqlite3.Connection, pks: Sequence[int]) -> None:
    sqlite_children.unlink_deleted(conn, pks)
    params = [(pk,) for pk in pks]
    for table in ("instance_events", "pending_events", "stream_chunks"):
        conn.executemany(f"DELETE FROM {table} WHERE instance_pk = ?", params)
    conn.executemany("DELETE FROM instances WHERE pk = ?", params)


class SqliteStorage(
    SqliteWorkerWrites,
    SeparateLookAhead,
    SqlCatalog,
    SqlInstanceReads,
    SqlCredentials,
    SqlOpsLog,
    SqlWebhooks,
):
    """``Storage`` on SQLite. ``path`` None gives the in-memory store."""

    # Another process on the file is found at the poll (poll_ms), as it always was.
    push_wakes = True
    dialect = SQLITE

    def __init__(self, url: str, path: str | None, synchronous: str = "FULL") -> None:
        self.url = url
        self._path = path
        self._synchronous = synchronous
        # A full disk is an episode of this (the writer notes it): see storage/outage.py.
        self.health = StoreHealth(f"SQLite {path or ':memory:'}")
        self._local = threading.local()
        self._shared_lock: threading.Lock | None = None
        self._writer: InlineWriter | None = None
        # Only this process hears them: workers in other processes on the same file notice
        # stops at their next heartbeat or write.
        self._init_signals()
        self._write_conn: sqlite3.Connection | None = None
        self._lock_file: BinaryIO | None = None
        # record_progress_nowait: events not yet written, per instance pk.
        self._queued: dict[int, tuple[Claim, list[NewEvent]]] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        # When the oldest of them was queued (loop time): the flush timer is left armed when a
        # step's result takes them, and on firing re-arms until that many have lingered enough.
        self._queued_since = 0.0
        self.appended = AppendSignal(self._latest_event_ids)

    # --- connections ------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path or ":memory:", isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 10000")
        if self._path is not None:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA cache_size = -32000")
        return conn

    async def open(self) -> None:
        if self._writer is not None:
            return
        if self._path is not None:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        apply_sqlite_migrations(conn)
        self._write_conn = conn
        if self._path is None:
            self._shared_lock = threading.Lock()
        syncer = None
        if self._path is not None and self._synchronous != "NORMAL":
            # Commits append to the WAL without fsync; the syncer makes them durable off-loop.
            conn.execute("PRAGMA synchronous = NORMAL")
            preallocate_wal(conn, self._path + "-wal")
            syncer = WalSyncer(self._path + "-wal")
        self._writer = InlineWriter(conn, self._shared_lock, syncer, self.health)
        self._writer.on_commit(self._fire_wake)
        sqlite_children.install(conn, self._fire_wake)
        sqlite_webhooks.install(conn)

    async def close(self) -> None:
        if self._writer is None:
            return
        self.appended.stop()
        self._flush_queued()
        self._writer.close()
        self._writer = None
        if self._write_conn is not None:
            self._write_conn.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def sole_worker_lock(self) -> bool:
        if self._path is None:
            return True
        if self._lock_file is None:
            handle = open(self._path + ".worker-lock", "a+b")  # noqa: SIM115 - held until close
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                return False
            self._lock_file = handle
        return True

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._shared_lock is not None:
            assert self._write_conn is not None
            with self._shared_lock:
                return fn(self._write_conn)
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return fn(conn)

    def _write(
        self,
        job: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = True,
        wait: bool = True,
        wakes: bool = False,
        batched: bool = False,
    ) -> Any:
        if self._writer is None:
            raise RuntimeError("storage is not open")
        # A batched job commits later in this turn, possibly after an inline write of the
        # same claim: it must not carry that claim's earlier events.
        if self._queued and not batched:
            # Events queued without waiting commit with (before) whatever is written next.
            queued, self._queued = self._queued, {}
            self._cancel_flush()
            main = job

            def job(conn: sqlite3.Connection) -> T:
                for claim, events in queued.values():
                    try:
                        check_fence(conn, claim)
                    except Fenced:  # the claim's own next write fails the same way
                        continue
                    insert_events(conn, claim.instance.pk, events)
                return main(conn)

            written = self._writer.submit(
                job, durable=durable, wait=wait, wakes=wakes, batched=batched
            )
            # An inline write has run: failed (its own error, or a full disk), it rolled the
            # carried events back with it, and the claims' next writes must carry them again.
            if written.done() and not written.cancelled() and written.exception() is not None:
                self._put_back(queued)
            elif self.appended.active:
                written.add_done_callback(lambda _: self.appended.fire_many(queued))
            return written
        return self._writer.submit(job, durable=durable, wait=wait, wakes=wakes, batched=batched)

    async def _sql_read(self, job: Job[T]) -> T:
        return self._read(on_sqlite(job))

    async def _sql_write(self, job: Job[T]) -> T:
        result: T = await self._write(on_sqlite(job))
        return result

    async def sync(self) -> None:
        if self._writer is None:
            raise RuntimeError("storage is not open")
        pending = self._writer.sync()
        if pending is not None:
            await pending

    # --- workflows and versions -------------------------------------------------------------

    async def register_workflow(
        self, account_id: str, name: str, definition: WorkflowDefinition, now: int
    ) -> WorkflowRecord:
        version_id = str(uuid.uuid4())

        def job(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT pk, jurisdiction FROM workflows WHERE account_id = ? AND name = ?",
                (account_id, name),
            ).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO workflows (account_id, name, id, version_id, created_on,"
                    " modified_on, concurrency_limit, jurisdiction)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        account_id,
                        name,
                        str(uuid.uuid4()),
                        version_id,
                        now,
                        now,
                        definition.concurrency_limit,
                        definition.jurisdiction,
                    ),
                )
                workflow_pk = cur.lastrowid
            else:
                workflow_pk = row[0]
                check_jurisdiction(row[1], definition.jurisdiction)
                if row[1] is None and definition.jurisdiction is not None:
                    conn.execute(
                        "UPDATE workflows SET jurisdiction = ? WHERE pk = ?",
                        (definition.jurisdiction, workflow_pk),
                    )
                conn.execute(
                    "UPDATE workflows SET version_id = ?, modified_on = ?, concurrency_limit = ?"
                    " WHERE pk = ?",
                    (version_id, now, definition.concurrency_limit, workflow_pk),
                )
            conn.execute(
                f"INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
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
                ),
            )

        await self._write(job)
        found = await self.get_workflow(account_id, name)
        assert found is not None
        return found

    async def delete_workflow(self, account_id: str, name: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT pk FROM workflows WHERE account_id = ? AND name = ?", (account_id, name)
            ).fetchone()
            if row is None:
                return False
            pks = [
                r[0] for r in conn.execute("SELECT pk FROM instances WHERE workflow_pk = ?", row)
            ]
            _delete_instance_rows(conn, pks)
            run_to_end(drop_workflow_hooks(SqliteSession(conn), row[0]))
            conn.execute("DELETE FROM versions WHERE workflow_pk = ?", row)
            conn.execute("DELETE FROM workflows WHERE pk = ?", row)
            gone[:] = pks
            return True

        gone: list[int] = []
        deleted = bool(await self._write(job))
        self._fire_control([(pk, None) for pk in gone])
        return deleted

    # --- instances -------------------------------------------------------------------------

    async def create_instances(
        self,
        workflow_pk: int,
        version_id: str,
        items: Sequence[NewInstance],
        now: int,
        *,
        skip_existing: bool,
    ) -> list[InstanceRecord]:
        def job(conn: sqlite3.Connection) -> list[InstanceRecord]:
            current = conn.execute(
                "SELECT version_id FROM workflows WHERE pk = ?", (workflow_pk,)
            ).fetchone()
            if current is None or current[0] != version_id:
                raise WorkflowChanged(f"version {version_id!r} is not workflow {workflow_pk}'s own")
            created: list[InstanceRecord] = []
            for item in items:
                exists = conn.execute(
                    "SELECT 1 FROM instances WHERE workflow_pk = ? AND id = ?",
                    (workflow_pk, item.id),
                ).fetchone()
                if exists:
                    if skip_existing:
                        continue
                    raise InstanceAlreadyExists(f"Instance {item.id!r} already exists")
                leased = item.lease_owner is not None
                cur = conn.execute(
                    "INSERT INTO instances (workflow_pk, id, version_id, status, trigger_source,"
                    " params, schedule, created_on, modified_on, runnable_at, priority,"
                    " success_retention_ms, error_retention_ms, lease_owner, lease_expires,"
                    " epoch, started_on)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
                    (
                        workflow_pk,
                        item.id,
                        version_id,
                        Status.RUNNING if leased else Status.QUEUED,
                        item.trigger_source,
                        item.params,
                        item.schedule,
                        now,
                        now,
                        now,
                        item.success_retention_ms,
                        item.error_retention_ms,
                        item.lease_owner,
                        item.lease_expires,
                        1 if leased else 0,
                        now if leased else None,
                    ),
                )
                data = item.queued_data(version_id)
                conn.execute(
                    "INSERT INTO instance_events (instance_pk, ts, type, data)"
                    f" VALUES (?, ?, '{EventType.WORKFLOW_QUEUED}', ?)",
                    (cur.lastrowid, now, data),
                )
                assert cur.lastrowid is not None
                created.append(item.as_created(cur.lastrowid, workflow_pk, version_id, now))
            if created:
                conn.execute(
                    "UPDATE workflows SET triggered_on = ? WHERE pk = ?", (now, workflow_pk)
                )
            return created

        # Instances created claimed leave the workers nothing to look for.
        wakes = any(item.lease_owner is None for item in items)
        result: list[InstanceRecord] = await self._write(job, wakes=wakes, batched=True)
        return result

    async def transition_instance(
        self, instance_pk: int, expected_status: str, transition: Transition, now: int
    ) -> None:
        async def change(s: Session) -> int | None:
            row = await transitions.held_in(s, SQLITE, instance_pk, expected_status)
            await transitions.apply(s, SQLITE, instance_pk, transition, now)
            held = transition.release_worker and row[2] is not None
            return int(row[1]) + 1 if held else None

        epoch = await self._write(on_sqlite(change), wakes=True)
        self.appended.fire(instance_pk)
        if epoch is not None:
            self._fire_control([(instance_pk, epoch)])

    async def delete_instances(self, workflow_pk: int, instance_ids: Sequence[str]) -> list[str]:
        def job(conn: sqlite3.Connection) -> list[str]:
            found: dict[str, int] = {}
            for instance_id in dict.fromkeys(instance_ids):
                row = conn.execute(
                    "SELECT pk FROM instances WHERE workflow_pk = ? AND id = ?",
                    (workflow_pk, instance_id),
                ).fetchone()
                if row is not None:
                    found[instance_id] = row[0]
            _delete_instance_rows(conn, list(found.values()))
            gone[:] = found.values()
            return list(found)

        gone: list[int] = []
        result: list[str] = await self._write(job)
        self._fire_control([(pk, None) for pk in gone])
        return result

    async def deliver_event(
        self, instance_pk: int, event_type: str, payload: bytes, now: int
    ) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT status FROM instances WHERE pk = ?", (instance_pk,)
            ).fetchone()
            if row is None:
                return False
            if row[0] in TERMINAL:
                raise CannotSendEvent(f"Cannot send an event to an instance that is {row[0]}")
            conn.execute(
                "INSERT INTO pending_events (instance_pk, type, payload, ts) VALUES (?, ?, ?, ?)",
                (instance_pk, event_type, payload, now),
            )
            # Paused and queued instances keep their schedule; the event waits in the buffer.
            conn.execute(
                "UPDATE instances SET wake_seq = wake_seq + 1,"
                " runnable_at = CASE WHEN status IN ('waiting', 'running', 'waitingForPause',"
                " 'rollingBack') THEN ? ELSE runnable_at END,"
                " priority = CASE WHEN status = 'waiting' THEN 0 ELSE priority END"
                " WHERE pk = ?",
                (now, instance_pk),
            )
            return True

        return bool(await self._write(job, wakes=True))

    # --- retention -------------------------------------------------------------------------

    async def delete_expired(self, now: int, limit: int) -> int:
        def job(conn: sqlite3.Connection) -> int:
            pks = [
                r[0]
                for r in conn.execute(
                    "SELECT pk FROM instances WHERE expires_at <= ? LIMIT ?", (now, limit)
                )
            ]
            _delete_instance_rows(conn, pks)
            return len(pks)

        result: int = await self._write(job)
        return result
