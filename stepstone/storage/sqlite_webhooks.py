"""Lifecycle webhooks on SQLite (a Stepstone extension).

A mixin of ``SqliteStorage``. The outbox row is written by a TEMP trigger on the store's one
write connection (the migrations runner holds no triggers), inside whatever transaction
changes an instance's status: a release, a terminate, a batched write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from stepstone.model.events import EventType
from stepstone.model.webhooks import (
    DELIVERED,
    FAILED,
    PENDING,
    WAITING,
    AttemptLog,
    DeliveryJob,
    DeliveryRecord,
    WebhookRecord,
    delivery_record,
    events_column,
    events_of,
)

T = TypeVar("T")

_NOTIFIED = "('errored', 'complete', 'terminated', 'paused')"

_TRIGGER = f"""
CREATE TEMP TRIGGER IF NOT EXISTS stepstone_webhook_outbox AFTER UPDATE OF status ON instances
FOR EACH ROW WHEN NEW.status <> OLD.status AND NEW.status IN {_NOTIFIED}
BEGIN
    INSERT OR IGNORE INTO webhook_deliveries (hook_pk, instance_pk, workflow_name,
        instance_id, event, error, at, state, next_attempt_at)
    SELECT h.pk, NEW.pk, w.name, NEW.id, e.name, NEW.error, NEW.modified_on, 'pending',
        NEW.modified_on
    FROM webhooks h JOIN workflows w ON w.pk = h.workflow_pk,
        (SELECT NEW.status AS name UNION ALL SELECT 'rolledBack'
            WHERE OLD.status = 'rollingBack'
                AND NEW.status IN ('errored', 'terminated', 'complete')) e
    WHERE h.workflow_pk = NEW.workflow_pk AND h.events LIKE '%,' || e.name || ',%';
END
"""

# A wait that has lasted longer than a hook's threshold: the instance is waiting and its
# latest step event is a wait_started at least that old. The wait's start is the row's time, so
# the unique index sends one notice per wait.
_OVERDUE_WAITS = f"""
INSERT OR IGNORE INTO webhook_deliveries (hook_pk, instance_pk, workflow_name, instance_id,
    event, error, at, state, next_attempt_at)
SELECT h.pk, i.pk, w.name, i.id, ?, NULL, e.ts, 'pending', ?
FROM webhooks h JOIN workflows w ON w.pk = h.workflow_pk
    JOIN instances i ON i.workflow_pk = h.workflow_pk AND i.status = 'waiting'
    JOIN instance_events e ON e.event_id = (
        SELECT max(event_id) FROM instance_events
        WHERE instance_pk = i.pk AND step_kind IS NOT NULL)
WHERE h.events LIKE ? AND h.wait_threshold_ms IS NOT NULL AND e.type = '{EventType.WAIT_STARTED}'
    AND e.ts <= ? - h.wait_threshold_ms
"""

# Delivered or failed for good; the predicate of the index webhook_deliveries_done, word for
# word, so the planner uses it.
_FINISHED = "state <> 'pending'"

_HOOK_COLUMNS = "id, url, events, secret, wait_threshold_ms, source, created_on"
_DELIVERY_COLUMNS = (
    "d.pk, h.id, h.url, d.instance_id, d.event, d.at, d.state, d.attempts,"
    " d.next_attempt_at, d.last_error, d.delivered_on"
)


def install(conn: sqlite3.Connection) -> None:
    """Install the outbox trigger on the write connection (nothing before the migration)."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'webhook_deliveries'"
    ).fetchone()
    if found is not None:
        conn.execute(_TRIGGER)


def drop_workflow_hooks(conn: sqlite3.Connection, workflow_pk: int) -> None:
    """Delete a workflow's hooks with their deliveries and attempts, in the transaction that
    deletes the workflow: a hook left behind would keep its id from a new workflow's."""
    hooks = "SELECT pk FROM webhooks WHERE workflow_pk = ?"
    conn.execute(
        "DELETE FROM webhook_attempts WHERE delivery_pk IN (SELECT pk FROM webhook_deliveries"
        f" WHERE hook_pk IN ({hooks}))",
        (workflow_pk,),
    )
    conn.execute(f"DELETE FROM webhook_deliveries WHERE hook_pk IN ({hooks})", (workflow_pk,))
    conn.execute("DELETE FROM webhooks WHERE workflow_pk = ?", (workflow_pk,))


def _hook(row: Sequence[Any]) -> WebhookRecord:
    return WebhookRecord(
        str(row[0]), str(row[1]), events_of(str(row[2])), str(row[3]), row[4], row[5], row[6]
    )


class SqliteWebhooks:
    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    def _write(self, job: Callable[[sqlite3.Connection], T]) -> Any:
        raise NotImplementedError

    async def put_webhooks(
        self, workflow_pk: int, hooks: Sequence[WebhookRecord], *, replace_source: str | None
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            if replace_source is not None:
                conn.execute(
                    "DELETE FROM webhooks WHERE workflow_pk = ? AND source = ?",
                    (workflow_pk, replace_source),
                )
            conn.executemany(
                f"INSERT INTO webhooks (workflow_pk, {_HOOK_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET url = excluded.url, events = excluded.events,"
                " secret = excluded.secret, wait_threshold_ms = excluded.wait_threshold_ms",
                [
                    (
                        workflow_pk,
                        h.id,
                        h.url,
                        events_column(h.events),
                        h.secret,
                        h.wait_threshold_ms,
                        h.source,
                        h.created_on,
                    )
                    for h in hooks
                ],
            )

        await self._write(job)

    async def list_webhooks(self, workflow_pk: int) -> list[WebhookRecord]:
        rows = self._read(
            lambda c: c.execute(
                f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE workflow_pk = ?"
                " ORDER BY created_on, id",
                (workflow_pk,),
            ).fetchall()
        )
        return [_hook(r) for r in rows]

    async def delete_webhook(self, workflow_pk: int, hook_id: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "DELETE FROM webhooks WHERE workflow_pk = ? AND id = ? RETURNING pk",
                (workflow_pk, hook_id),
            ).fetchone()
            if row is None:
                return False
            conn.execute(
                "DELETE FROM webhook_attempts WHERE delivery_pk IN"
                " (SELECT pk FROM webhook_deliveries WHERE hook_pk = ?)",
                (row[0],),
            )
            conn.execute("DELETE FROM webhook_deliveries WHERE hook_pk = ?", (row[0],))
            return True

        return bool(await self._write(job))

    async def enqueue_overdue_waits(self, now: int) -> int:
        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(_OVERDUE_WAITS, (WAITING, now, f"%,{WAITING},%", now))
            return cur.rowcount

        return int(await self._write(job))

    async def claim_deliveries(
        self, owner: str, now: int, lease_ms: int, limit: int
    ) -> list[DeliveryJob]:
        def job(conn: sqlite3.Connection) -> list[DeliveryJob]:
            rows = conn.execute(
                "UPDATE webhook_deliveries SET lease_owner = ?, lease_expires = ?,"
                " attempts = attempts + 1 WHERE pk IN (SELECT pk FROM webhook_deliveries"
                " WHERE state = ? AND next_attempt_at <= ?"
                " AND (lease_expires IS NULL OR lease_expires <= ?)"
                " ORDER BY next_attempt_at, pk LIMIT ?) RETURNING pk",
                (owner, now + lease_ms, PENDING, now, now, limit),
            ).fetchall()
            jobs = []
            for (pk,) in rows:
                r = conn.execute(
                    "SELECT d.pk, h.id, h.url, h.secret, d.workflow_name, d.instance_id,"
                    " d.event, d.error, d.at, d.attempts FROM webhook_deliveries d"
                    " JOIN webhooks h ON h.pk = d.hook_pk WHERE d.pk = ?",
                    (pk,),
                ).fetchone()
                if r is not None:
                    jobs.append(DeliveryJob(*r))
            return sorted(jobs, key=lambda j: j.pk)

        result: list[DeliveryJob] = await self._write(job)
        return result

    async def finish_delivery(
        self,
        delivery_pk: int,
        owner: str,
        attempt: AttemptLog,
        *,
        delivered: bool,
        retry_at: int | None,
    ) -> bool:
        state = DELIVERED if delivered else (PENDING if retry_at is not None else FAILED)
        ended = attempt.started_on + attempt.duration_ms

        def job(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE webhook_deliveries SET state = ?, lease_owner = NULL,"
                " lease_expires = NULL, next_attempt_at = ?,"
                " last_error = ?, delivered_on = ? WHERE pk = ? AND lease_owner = ?",
                (
                    state,
                    # A finished row keeps when it finished here: what pruning goes by.
                    ended if retry_at is None else retry_at,
                    attempt.error,
                    ended if delivered else None,
                    delivery_pk,
                    owner,
                ),
            )
            if cur.rowcount == 0:
                return False
            conn.execute(
                "INSERT INTO webhook_attempts (delivery_pk, started_on, duration_ms,"
                " status_code, error) VALUES (?, ?, ?, ?, ?)",
                (
                    delivery_pk,
                    attempt.started_on,
                    attempt.duration_ms,
                    attempt.status_code,
                    attempt.error,
                ),
            )
            return True

        return bool(await self._write(job))

    async def prune_deliveries(self, before: int, limit: int) -> int:
        def job(conn: sqlite3.Connection) -> int:
            pks = [
                (r[0],)
                for r in conn.execute(
                    f"SELECT pk FROM webhook_deliveries WHERE {_FINISHED}"
                    " AND next_attempt_at < ? ORDER BY next_attempt_at LIMIT ?",
                    (before, limit),
                )
            ]
            conn.executemany("DELETE FROM webhook_attempts WHERE delivery_pk = ?", pks)
            conn.executemany("DELETE FROM webhook_deliveries WHERE pk = ?", pks)
            return len(pks)

        return int(await self._write(job))

    async def release_delivery_leases(self) -> int:
        def job(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE webhook_deliveries SET lease_owner = NULL, lease_expires = NULL"
                " WHERE lease_owner IS NOT NULL"
            ).rowcount

        return int(await self._write(job))

    async def list_deliveries(
        self, workflow_pk: int, hook_id: str | None, state: str | None, limit: int
    ) -> list[DeliveryRecord]:
        clauses, args = ["h.workflow_pk = ?"], list[Any]([workflow_pk])
        if hook_id is not None:
            clauses.append("h.id = ?")
            args.append(hook_id)
        if state is not None:
            clauses.append("d.state = ?")
            args.append(state)

        def read(c: sqlite3.Connection) -> list[DeliveryRecord]:
            rows = c.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d"
                f" JOIN webhooks h ON h.pk = d.hook_pk WHERE {' AND '.join(clauses)}"
                " ORDER BY d.pk DESC LIMIT ?",
                [*args, limit],
            ).fetchall()
            found = []
            for r in rows:
                log = c.execute(
                    "SELECT started_on, duration_ms, status_code, error FROM webhook_attempts"
                    " WHERE delivery_pk = ? ORDER BY pk",
                    (r[0],),
                ).fetchall()
                found.append(delivery_record(r, tuple(AttemptLog(*a) for a in log)))
            return found

        return self._read(read)

    async def resend_delivery(self, workflow_pk: int, delivery_pk: int, now: int) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    "UPDATE webhook_deliveries SET state = ?, next_attempt_at = ?,"
                    " lease_owner = NULL, lease_expires = NULL WHERE pk = ? AND hook_pk IN"
                    " (SELECT pk FROM webhooks WHERE workflow_pk = ?)",
                    (PENDING, now, delivery_pk, workflow_pk),
                ).rowcount
                > 0
            )

        return bool(await self._write(job))
