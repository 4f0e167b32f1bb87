"""Lifecycle webhooks, on either SQL store (a Stepstone extension).

The outbox row is written inside whatever transaction changes an instance's status, by a
trigger: PostgreSQL's of migration 0011, SQLite's TEMP one on its write connection
(``sqlite_webhooks``). A claim takes due rows with a lease (on PostgreSQL skipping rows
another server is claiming), so two servers never send the same row at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
from stepstone.storage.sql.session import Row, Session, SqlStore

# A wait that has lasted longer than a hook's threshold: the instance is waiting and its
# latest step event is a wait_started at least that old. The wait's start is the row's time, so
# the unique index sends one notice per wait.
_OVERDUE_WAITS = f"""
INSERT INTO webhook_deliveries (hook_pk, instance_pk, workflow_name, instance_id,
    event, error, at, state, next_attempt_at)
SELECT h.pk, i.pk, w.name, i.id, CAST(? AS TEXT), NULL, e.ts, 'pending', CAST(? AS BIGINT)
FROM webhooks h JOIN workflows w ON w.pk = h.workflow_pk
    JOIN instances i ON i.workflow_pk = h.workflow_pk AND i.status = 'waiting'
    JOIN instance_events e ON e.event_id = (
        SELECT max(event_id) FROM instance_events
        WHERE instance_pk = i.pk AND step_kind IS NOT NULL)
WHERE h.events LIKE CAST(? AS TEXT) AND h.wait_threshold_ms IS NOT NULL
    AND e.type = '{EventType.WAIT_STARTED}'
    AND e.ts <= CAST(? AS BIGINT) - h.wait_threshold_ms
ON CONFLICT DO NOTHING
"""
# Delivered or failed for good; the predicate of the index webhook_deliveries_done, word for
# word, so the planner uses it.
_FINISHED = "state <> 'pending'"
_HOOK_COLUMNS = "id, url, events, secret, wait_threshold_ms, source, created_on"
_DELIVERY_COLUMNS = (
    "d.pk, h.id, h.url, d.instance_id, d.event, d.at, d.state, d.attempts,"
    " d.next_attempt_at, d.last_error, d.delivered_on"
)


async def drop_workflow_hooks(s: Session, workflow_pk: int) -> None:
    """Delete a workflow's hooks with their deliveries and attempts, in the transaction that
    deletes the workflow: a hook left behind would keep its id from a new workflow's."""
    hooks = "SELECT pk FROM webhooks WHERE workflow_pk = ?"
    await s.run(
        "DELETE FROM webhook_attempts WHERE delivery_pk IN (SELECT pk FROM webhook_deliveries"
        f" WHERE hook_pk IN ({hooks}))",
        workflow_pk,
    )
    await s.run(f"DELETE FROM webhook_deliveries WHERE hook_pk IN ({hooks})", workflow_pk)
    await s.run("DELETE FROM webhooks WHERE workflow_pk = ?", workflow_pk)


def _hook(row: Row) -> WebhookRecord:
    return WebhookRecord(
        str(row[0]), str(row[1]), events_of(str(row[2])), str(row[3]), row[4], row[5], row[6]
    )


class SqlWebhooks(SqlStore):
    async def put_webhooks(
        self, workflow_pk: int, hooks: Sequence[WebhookRecord], *, replace_source: str | None
    ) -> None:
        async def write(s: Session) -> None:
            if replace_source is not None:
                await s.run(
                    "DELETE FROM webhooks WHERE workflow_pk = ? AND source = ?",
                    workflow_pk,
                    replace_source,
                )
            await s.run_many(
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

        await self._sql_write(write)

    async def list_webhooks(self, workflow_pk: int) -> list[WebhookRecord]:
        async def read(s: Session) -> list[WebhookRecord]:
            rows = await s.all(
                f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE workflow_pk = ?"
                " ORDER BY created_on, id",
                workflow_pk,
            )
            return [_hook(r) for r in rows]

        return await self._sql_read(read)

    async def delete_webhook(self, workflow_pk: int, hook_id: str) -> bool:
        async def write(s: Session) -> bool:
            row = await s.one(
                "DELETE FROM webhooks WHERE workflow_pk = ? AND id = ? RETURNING pk",
                workflow_pk,
                hook_id,
            )
            if row is None:
                return False
            await s.run(
                "DELETE FROM webhook_attempts WHERE delivery_pk IN"
                " (SELECT pk FROM webhook_deliveries WHERE hook_pk = ?)",
                row[0],
            )
            await s.run("DELETE FROM webhook_deliveries WHERE hook_pk = ?", row[0])
            return True

        return await self._sql_write(write)

    async def enqueue_overdue_waits(self, now: int) -> int:
        async def write(s: Session) -> int:
            return await s.run(_OVERDUE_WAITS, WAITING, now, f"%,{WAITING},%", now)

        return await self._sql_write(write)

    async def claim_deliveries(
        self, owner: str, now: int, lease_ms: int, limit: int
    ) -> list[DeliveryJob]:
        async def write(s: Session) -> list[DeliveryJob]:
            claimed = await s.all(
                "UPDATE webhook_deliveries SET lease_owner = ?, lease_expires = ?,"
                " attempts = attempts + 1 WHERE pk IN (SELECT pk FROM webhook_deliveries"
                " WHERE state = ? AND next_attempt_at <= ?"
                " AND (lease_expires IS NULL OR lease_expires <= ?)"
                f" ORDER BY next_attempt_at, pk LIMIT ?{self.dialect.skip_locked}) RETURNING pk",
                owner,
                now + lease_ms,
                PENDING,
                now,
                now,
                limit,
            )
            if not claimed:
                return []
            args: list[Any] = []
            picked = self.dialect.one_of("d.pk", [r[0] for r in claimed], args, "bigint")
            rows = await s.all(
                "SELECT d.pk, h.id, h.url, h.secret, d.workflow_name, d.instance_id,"
                " d.event, d.error, d.at, d.attempts FROM webhook_deliveries d"
                f" JOIN webhooks h ON h.pk = d.hook_pk WHERE {picked} ORDER BY d.pk",
                *args,
            )
            return [DeliveryJob(*r) for r in rows]

        return await self._sql_write(write)

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

        async def write(s: Session) -> bool:
            changed = await s.run(
                "UPDATE webhook_deliveries SET state = ?, lease_owner = NULL,"
                " lease_expires = NULL, next_attempt_at = ?,"
                " last_error = ?, delivered_on = ? WHERE pk = ? AND lease_owner = ?",
                state,
                # A finished row keeps when it finished here: what pruning goes by.
                ended if retry_at is None else retry_at,
                attempt.error,
                ended if delivered else None,
                delivery_pk,
                owner,
            )
            if changed == 0:
                return False
            await s.run(
                "INSERT INTO webhook_attempts (delivery_pk, started_on, duration_ms,"
                " status_code, error) VALUES (?, ?, ?, ?, ?)",
                delivery_pk,
                attempt.started_on,
                attempt.duration_ms,
                attempt.status_code,
                attempt.error,
            )
            return True

        return await self._sql_write(write)

    async def prune_deliveries(self, before: int, limit: int) -> int:
        async def write(s: Session) -> int:
            # SKIP LOCKED on PostgreSQL: a row a resend is changing is left for the next
            # sweep; one the resend made pending meanwhile no longer matches when locked.
            rows = await s.all(
                f"SELECT pk FROM webhook_deliveries WHERE {_FINISHED}"
                " AND next_attempt_at < ? ORDER BY next_attempt_at LIMIT ?"
                f"{self.dialect.skip_locked}",
                before,
                limit,
            )
            if rows:
                pks = [r[0] for r in rows]
                for table, column in (
                    ("webhook_attempts", "delivery_pk"),
                    ("webhook_deliveries", "pk"),
                ):
                    args: list[Any] = []
                    gone = self.dialect.one_of(column, pks, args, "bigint")
                    await s.run(f"DELETE FROM {table} WHERE {gone}", *args)
            return len(rows)

        return await self._sql_write(write)

    async def release_delivery_leases(self) -> int:
        async def write(s: Session) -> int:
            return await s.run(
                "UPDATE webhook_deliveries SET lease_owner = NULL, lease_expires = NULL"
                " WHERE lease_owner IS NOT NULL"
            )

        return await self._sql_write(write)

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
        sql = (
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d"
            f" JOIN webhooks h ON h.pk = d.hook_pk WHERE {' AND '.join(clauses)}"
            " ORDER BY d.pk DESC LIMIT ?"
        )

        async def read(s: Session) -> list[DeliveryRecord]:
            rows = await s.all(sql, *args, limit)
            if not rows:
                return []
            of: list[Any] = []
            picked = self.dialect.one_of("delivery_pk", [r[0] for r in rows], of, "bigint")
            logs = await s.all(
                "SELECT delivery_pk, started_on, duration_ms, status_code, error"
                f" FROM webhook_attempts WHERE {picked} ORDER BY pk",
                *of,
            )
            by: dict[int, list[AttemptLog]] = {}
            for a in logs:
                by.setdefault(a[0], []).append(AttemptLog(a[1], a[2], a[3], a[4]))
            return [delivery_record(r, tuple(by.get(r[0], ()))) for r in rows]

        return await self._sql_read(read)

    async def resend_delivery(self, workflow_pk: int, delivery_pk: int, now: int) -> bool:
        async def write(s: Session) -> bool:
            changed = await s.run(
                "UPDATE webhook_deliveries SET state = ?, next_attempt_at = ?,"
                " lease_owner = NULL, lease_expires = NULL WHERE pk = ? AND hook_pk IN"
                " (SELECT pk FROM webhooks WHERE workflow_pk = ?)",
                PENDING,
                now,
                delivery_pk,
                workflow_pk,
            )
            return changed > 0

        return await self._sql_write(write)
