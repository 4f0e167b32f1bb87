"""Lifecycle webhooks on PostgreSQL (a Stepstone extension).

A mixin of ``PostgresStorage``. The outbox row is written by the trigger of migration 0011
in whatever transaction changes an instance's status; a claim takes due rows with
``FOR UPDATE SKIP LOCKED`` and a lease, so two servers never send the same row at once.
"""

from __future__ import annotations

import re
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

_PLACEHOLDER = re.compile(r"\?")


def _pg(sql: str) -> str:
    """The '?' placeholders numbered as asyncpg wants them."""
    counter = iter(range(1, 1000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


_OVERDUE_WAITS = _pg(f"""
INSERT INTO webhook_deliveries (hook_pk, instance_pk, workflow_name, instance_id,
    event, error, at, state, next_attempt_at)
SELECT h.pk, i.pk, w.name, i.id, ?::text, NULL, e.ts, 'pending', ?::bigint
FROM webhooks h JOIN workflows w ON w.pk = h.workflow_pk
    JOIN instances i ON i.workflow_pk = h.workflow_pk AND i.status = 'waiting'
    JOIN instance_events e ON e.event_id = (
        SELECT max(event_id) FROM instance_events
        WHERE instance_pk = i.pk AND step_kind IS NOT NULL)
WHERE h.events LIKE ?::text AND h.wait_threshold_ms IS NOT NULL
    AND e.type = '{EventType.WAIT_STARTED}'
    AND e.ts <= ?::bigint - h.wait_threshold_ms
ON CONFLICT DO NOTHING
""")

_HOOK_COLUMNS = "id, url, events, secret, wait_threshold_ms, source, created_on"
_DELIVERY_COLUMNS = (
    "d.pk, h.id, h.url, d.instance_id, d.event, d.at, d.state, d.attempts,"
    " d.next_attempt_at, d.last_error, d.delivered_on"
)


async def drop_workflow_hooks(conn: Any, workflow_pk: int) -> None:
    """Delete a workflow's hooks with their deliveries and attempts, in the transaction that
    deletes the workflow: a hook left behind would keep its id from a new workflow's."""
    hooks = "SELECT pk FROM webhooks WHERE workflow_pk = $1"
    await conn.execute(
        "DELETE FROM webhook_attempts WHERE delivery_pk IN (SELECT pk FROM webhook_deliveries"
        f" WHERE hook_pk IN ({hooks}))",
        workflow_pk,
    )
    await conn.execute(f"DELETE FROM webhook_deliveries WHERE hook_pk IN ({hooks})", workflow_pk)
    await conn.execute("DELETE FROM webhooks WHERE workflow_pk = $1", workflow_pk)


def _hook(row: Sequence[Any]) -> WebhookRecord:
    return WebhookRecord(
        str(row[0]), str(row[1]), events_of(str(row[2])), str(row[3]), row[4], row[5], row[6]
    )


class PostgresWebhooks:
    _db: Any

    async def put_webhooks(
        self, workflow_pk: int, hooks: Sequence[WebhookRecord], *, replace_source: str | None
    ) -> None:
        async def job(conn: Any) -> None:
            if replace_source is not None:
                await conn.execute(
                    "DELETE FROM webhooks WHERE workflow_pk = $1 AND source = $2",
                    workflow_pk,
                    replace_source,
                )
            for h in hooks:
                await conn.execute(
                    f"INSERT INTO webhooks (workflow_pk, {_HOOK_COLUMNS})"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    " ON CONFLICT (id) DO UPDATE SET url = excluded.url,"
                    " events = excluded.events, secret = excluded.secret,"
                    " wait_threshold_ms = excluded.wait_threshold_ms",
                    workflow_pk,
                    h.id,
                    h.url,
                    events_column(h.events),
                    h.secret,
                    h.wait_threshold_ms,
                    h.source,
                    h.created_on,
                )

        await self._db.write(job)

    async def list_webhooks(self, workflow_pk: int) -> list[WebhookRecord]:
        rows = await self._db.read(
            lambda c: c.fetch(
                f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE workflow_pk = $1"
                " ORDER BY created_on, id",
                workflow_pk,
            )
        )
        return [_hook(r) for r in rows]

    async def delete_webhook(self, workflow_pk: int, hook_id: str) -> bool:
        async def job(conn: Any) -> bool:
            pk = await conn.fetchval(
                "DELETE FROM webhooks WHERE workflow_pk = $1 AND id = $2 RETURNING pk",
                workflow_pk,
                hook_id,
            )
            if pk is None:
                return False
            await conn.execute(
                "DELETE FROM webhook_attempts WHERE delivery_pk IN"
                " (SELECT pk FROM webhook_deliveries WHERE hook_pk = $1)",
                pk,
            )
            await conn.execute("DELETE FROM webhook_deliveries WHERE hook_pk = $1", pk)
            return True

        return bool(await self._db.write(job))

    async def enqueue_overdue_waits(self, now: int) -> int:
        async def job(conn: Any) -> int:
            done = await conn.execute(_OVERDUE_WAITS, WAITING, now, f"%,{WAITING},%", now)
            return int(done.split()[-1])

        return int(await self._db.write(job))

    async def claim_deliveries(
        self, owner: str, now: int, lease_ms: int, limit: int
    ) -> list[DeliveryJob]:
        async def job(conn: Any) -> list[DeliveryJob]:
            rows = await conn.fetch(
                "WITH due AS (SELECT pk FROM webhook_deliveries WHERE state = $3"
                " AND next_attempt_at <= $4 AND (lease_expires IS NULL OR lease_expires <= $4)"
                " ORDER BY next_attempt_at, pk LIMIT $5 FOR UPDATE SKIP LOCKED)"
                " UPDATE webhook_deliveries d SET lease_owner = $1, lease_expires = $2,"
                " attempts = d.attempts + 1 FROM due, webhooks h"
                " WHERE d.pk = due.pk AND h.pk = d.hook_pk"
                " RETURNING d.pk, h.id, h.url, h.secret, d.workflow_name, d.instance_id,"
                " d.event, d.error, d.at, d.attempts",
                owner,
                now + lease_ms,
                PENDING,
                now,
                limit,
            )
            return sorted((DeliveryJob(*r) for r in rows), key=lambda j: j.pk)

        result: list[DeliveryJob] = await self._db.write(job)
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

        async def job(conn: Any) -> bool:
            done = await conn.execute(
                "UPDATE webhook_deliveries SET state = $1, lease_owner = NULL,"
                " lease_expires = NULL, next_attempt_at = $2,"
                " last_error = $3, delivered_on = $4 WHERE pk = $5 AND lease_owner = $6",
                state,
                # A finished row keeps when it finished here: what pruning goes by.
                ended if retry_at is None else retry_at,
                attempt.error,
                ended if delivered else None,
                delivery_pk,
                owner,
            )
            if done.split()[-1] == "0":
                return False
            await conn.execute(
                "INSERT INTO webhook_attempts (delivery_pk, started_on, duration_ms,"
                " status_code, error) VALUES ($1, $2, $3, $4, $5)",
                delivery_pk,
                attempt.started_on,
                attempt.duration_ms,
                attempt.status_code,
                attempt.error,
            )
            return True

        return bool(await self._db.write(job))

    async def prune_deliveries(self, before: int, limit: int) -> int:
        async def job(conn: Any) -> int:
            # SKIP LOCKED: a row a resend is changing is left for the next sweep; one the
            # resend made pending meanwhile no longer matches when its lock is taken.
            pks = [
                r[0]
                for r in await conn.fetch(
                    "SELECT pk FROM webhook_deliveries WHERE state <> 'pending'"
                    " AND next_attempt_at < $1 ORDER BY next_attempt_at LIMIT $2"
                    " FOR UPDATE SKIP LOCKED",
                    before,
                    limit,
                )
            ]
            if pks:
                await conn.execute(
                    "DELETE FROM webhook_attempts WHERE delivery_pk = ANY($1::bigint[])", pks
                )
                await conn.execute(
                    "DELETE FROM webhook_deliveries WHERE pk = ANY($1::bigint[])", pks
                )
            return len(pks)

        return int(await self._db.write(job))

    async def release_delivery_leases(self) -> int:
        async def job(conn: Any) -> int:
            done = await conn.execute(
                "UPDATE webhook_deliveries SET lease_owner = NULL, lease_expires = NULL"
                " WHERE lease_owner IS NOT NULL"
            )
            return int(done.split()[-1])

        return int(await self._db.write(job))

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
        sql = _pg(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d"
            f" JOIN webhooks h ON h.pk = d.hook_pk WHERE {' AND '.join(clauses)}"
            " ORDER BY d.pk DESC LIMIT ?"
        )

        async def read(c: Any) -> list[DeliveryRecord]:
            rows = await c.fetch(sql, *args, limit)
            logs = await c.fetch(
                "SELECT delivery_pk, started_on, duration_ms, status_code, error"
                " FROM webhook_attempts WHERE delivery_pk = ANY($1::bigint[]) ORDER BY pk",
                [r[0] for r in rows],
            )
            by: dict[int, list[AttemptLog]] = {}
            for a in logs:
                by.setdefault(a[0], []).append(AttemptLog(a[1], a[2], a[3], a[4]))
            return [delivery_record(r, tuple(by.get(r[0], ()))) for r in rows]

        result: list[DeliveryRecord] = await self._db.read(read)
        return result

    async def resend_delivery(self, workflow_pk: int, delivery_pk: int, now: int) -> bool:
        async def job(conn: Any) -> bool:
            done = await conn.execute(
                "UPDATE webhook_deliveries SET state = $1, next_attempt_at = $2,"
                " lease_owner = NULL, lease_expires = NULL WHERE pk = $3 AND hook_pk IN"
                " (SELECT pk FROM webhooks WHERE workflow_pk = $4)",
                PENDING,
                now,
                delivery_pk,
                workflow_pk,
            )
            return bool(done.split()[-1] != "0")

        return bool(await self._db.write(job))
