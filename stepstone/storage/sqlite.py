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
from collections.abc import Callable, Mapping, Sequence
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
    DeliveredEvent,
    Fenced,
    InstanceLinks,
    InstanceRecord,
    NewEvent,
    NewInstance,
    Release,
    SeparateLookAhead,
    Transition,
    WorkflowChanged,
    WorkflowDefinition,
    WorkflowRecord,
    check_jurisdiction,
)
from stepstone.storage.event_match import first_match
from stepstone.storage.migrations import apply_sqlite_migrations
from stepstone.storage.outage import StoreHealth
from stepstone.storage.signals import Signals
from stepstone.storage.sql import transitions
from stepstone.storage.sql.catalog import SqlCatalog
from stepstone.storage.sql.credentials import SqlCredentials
from stepstone.storage.sql.dialect import SQLITE
from stepstone.storage.sql.instances import SqlInstanceReads
from stepstone.storage.sql.ops_log import SqlOpsLog
from stepstone.storage.sql.rows import INSTANCE_COLUMNS, VERSION_COLUMNS, version_row
from stepstone.storage.sql.session import Job, Session, SqliteSession, on_sqlite, run_to_end
from stepstone.storage.sql.transitions import expiry
from stepstone.storage.sql.webhooks import SqlWebhooks, drop_workflow_hooks
from stepstone.storage.sqlite_writer import InlineWriter, WalSyncer, preallocate_wal
from stepstone.storage.workflow_caps import sqlite_candidates, sqlite_caps, sqlite_running

T = TypeVar("T")
# How long an attempt's start may wait in memory for the write that usually follows it.
LINGER_S = 0.001


def _instance(row: Sequence[Any]) -> InstanceRecord:
    return InstanceRecord(*row)


_INSERT_EVENTS = [
    "INSERT INTO instance_events (instance_pk, ts, type, step_kind, step_name, data) VALUES "
    + ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    for rows in range(1, 9)
]


def _insert_events(conn: sqlite3.Connection, instance_pk: int, events: Sequence[NewEvent]) -> None:
    # One statement for up to eight rows (a step writes four): each execute costs more than a
    # row, and executemany more than a few executes. Rows keep their order, so their ids do.
    for start in range(0, len(events), 8):
        chunk = events[start : start + 8]
        values: list[Any] = []
        for e in chunk:
            values += (instance_pk, e.ts, e.type, e.step_kind, e.step_name, e.data)
        conn.execute(_INSERT_EVENTS[len(chunk) - 1], values)


_FENCE = "SELECT epoch, lease_owner, id, status, wake_seq FROM instances WHERE pk = ?"


def _fenced_row(conn: sqlite3.Connection, claim: Claim) -> Any:
    """The claimed instance's ``(status, wake_seq)`` if ``claim`` still holds it, else Fenced.

    The epoch alone is not enough: the owner is compared as on PostgreSQL, and the id because
    SQLite gives a new row the pk of the newest deleted one, so a claim of a deleted instance
    could otherwise pass for a claim of the next one created.
    """
    row = conn.execute(_FENCE, (claim.instance.pk,)).fetchone()
    if row is None or (row[0], row[1], row[2]) != (claim.epoch, claim.owner, claim.instance.id):
        raise Fenced(claim.instance.id)
    return row[3:]


def _check_fence(conn: sqlite3.Connection, claim: Claim) -> str:
    return str(_fenced_row(conn, claim)[0])


def _delete_instance_rows(conn: sqlite3.Connection, pks: Sequence[int]) -> None:
    sqlite_children.unlink_deleted(conn, pks)
    params = [(pk,) for pk in pks]
    for table in ("instance_events", "pending_events", "stream_chunks"):
        conn.executemany(f"DELETE FROM {table} WHERE instance_pk = ?", params)
    conn.executemany("DELETE FROM instances WHERE pk = ?", params)


class SqliteStorage(
    SeparateLookAhead,
    SqlCatalog,
    SqlInstanceReads,
    SqlCredentials,
    SqlOpsLog,
    SqlWebhooks,
    Signals,
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
                        _check_fence(conn, claim)
                    except Fenced:  # the claim's own next write fails the same way
                        continue
                    _insert_events(conn, claim.instance.pk, events)
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

    async def _sql_read(self, job: Job[T]) -> T:
        return self._read(on_sqlite(job))

    async def _sql_write(self, job: Job[T]) -> T:
        result: T = await self._write(on_sqlite(job))
        return result

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

    def _workflow_rows(self, conn: sqlite3.Connection, where: str, args: Sequence[Any]) -> Any:
        return conn.execute(
            "SELECT w.pk, w.account_id, w.name, w.id, w.created_on, w.modified_on,"
            f" w.triggered_on, {', '.join('v.' + c.strip() for c in VERSION_COLUMNS.split(','))},"
            " w.jurisdiction, w.retention_fallback_ms"
            f" FROM workflows w JOIN versions v ON v.id = w.version_id {where}",
            args,
        ).fetchall()

    @staticmethod
    def _workflow(row: Sequence[Any]) -> WorkflowRecord:
        pk, account_id, name, workflow_id, created_on, modified_on, triggered_on = row[:7]
        return WorkflowRecord(
            pk,
            account_id,
            name,
            workflow_id,
            created_on,
            modified_on,
            triggered_on,
            version_row(row[7:-2]),
            row[-2],
            row[-1],
        )

    async def get_workflow(self, account_id: str, name: str) -> WorkflowRecord | None:
        rows = self._read(
            lambda c: self._workflow_rows(
                c, "WHERE w.account_id = ? AND w.name = ?", (account_id, name)
            )
        )
        return self._workflow(rows[0]) if rows else None

    async def list_workflows(
        self, account_id: str | None, search: str | None, offset: int, limit: int
    ) -> tuple[list[WorkflowRecord], int]:
        clauses, args = [], []
        if account_id is not None:
            clauses.append("w.account_id = ?")
            args.append(account_id)
        if search:
            clauses.append("instr(w.name, ?) > 0")
            args.append(search)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""

        def read(conn: sqlite3.Connection) -> tuple[list[WorkflowRecord], int]:
            rows = self._workflow_rows(
                conn, f"{where} ORDER BY w.name LIMIT ? OFFSET ?", [*args, limit, offset]
            )
            total = conn.execute(
                f"SELECT count(*) FROM workflows w {where}",
                args,
            ).fetchone()[0]
            return [self._workflow(r) for r in rows], int(total)

        return self._read(read)

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
                cur = conn.execute(
                    "INSERT INTO instances (workflow_pk, id, version_id, status, trigger_source,"
                    " params, schedule, created_on, modified_on, runnable_at, priority,"
                    " success_retention_ms, error_retention_ms)"
                    " VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                    (
                        workflow_pk,
                        item.id,
                        version_id,
                        item.trigger_source,
                        item.params,
                        item.schedule,
                        now,
                        now,
                        now,
                        item.success_retention_ms,
                        item.error_retention_ms,
                    ),
                )
                data = orjson.dumps(
                    {"versionId": version_id, "trigger": {"source": item.trigger_source}}
                    | ({"traceparent": item.traceparent} if item.traceparent else {})
                )
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

        result: list[InstanceRecord] = await self._write(job, wakes=True, batched=True)
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

    # --- workers ---------------------------------------------------------------------------

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
            claims = [Claim(_instance(r[:19]), owner, r[19], r[20]) for r in rows]
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
            status = _check_fence(conn, claim)
            _insert_events(conn, claim.instance.pk, events)
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
            _check_fence(conn, claim)
            conn.execute(
                "UPDATE instances SET status = ? WHERE pk = ?", (status, claim.instance.pk)
            )

        await self._write(job)

    async def record_stream_chunk(
        self, claim: Claim, step_name: str, chunk_no: int, data: bytes
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            _check_fence(conn, claim)
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
            _check_fence(conn, claim)
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
            _insert_events(
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
            current, wake_seq = _fenced_row(conn, claim)
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
            _insert_events(conn, claim.instance.pk, events)
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

    # --- retention, settings, tokens -------------------------------------------------------

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
