"""Bulk jobs and the audit log on PostgreSQL (operator extensions, not Cloudflare's).

A mixin of ``PostgresStorage``: reads through its ``_db``, writes through its ``_write``.
Claiming a job locks its row (``FOR UPDATE SKIP LOCKED``) so two servers never take the same
job; every page's write checks the lease in the same transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from stepstone.model.ops_records import (
    BULK_ENDED,
    BULK_QUEUED,
    BULK_RUNNING,
    ITEM_DONE,
    ITEM_FAILED,
    ITEM_PENDING,
    ITEM_SKIPPED,
    AuditEntry,
    AuditQuery,
    BulkItem,
    BulkJobRecord,
    BulkProgress,
    InstanceFilter,
)

T = TypeVar("T")

_JOB_COLUMNS = (
    "id, account_id, workflow_name, action, spec, actor, status, matched, done, skipped,"
    " failed, cursor_created_on, cursor_id, lease_owner, lease_expires, error, created_on,"
    " modified_on, finished_on"
)
_AUDIT_COLUMNS = (
    "at, account_id, action, actor_kind, outcome, actor_name, actor_id, workflow_name,"
    " instance_id, detail, bulk_job_id, seq"
)
_ENDED = "(" + ", ".join(f"'{s}'" for s in BULK_ENDED) + ")"


def _job(row: Sequence[Any]) -> BulkJobRecord:
    values = list(row)
    cursor = None if values[11] is None else (int(values[11]), str(values[12]))
    return BulkJobRecord(*values[:11], cursor, *values[13:])  # type: ignore[call-arg]


def _audit(row: Sequence[Any]) -> AuditEntry:
    values = list(row)
    if values[9] is not None:
        values[9] = bytes(values[9])
    return AuditEntry(*values)


class _Args:
    """Numbered placeholders for a query built clause by clause."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _where(workflow_pk: int, where: InstanceFilter, arg: _Args) -> list[str]:
    clauses = [f"workflow_pk = {arg(workflow_pk)}"]
    if where.statuses:
        clauses.append(f"status = ANY({arg(list(where.statuses))}::text[])")
    if where.created_after is not None:
        clauses.append(f"created_on >= {arg(where.created_after)}")
    if where.created_before is not None:
        clauses.append(f"created_on < {arg(where.created_before)}")
    if where.id_prefix:
        clauses.append(f"left(id, {arg(len(where.id_prefix))}) = {arg(where.id_prefix)}")
    if where.error_name is not None:
        clauses.append(
            "error IS NOT NULL AND"
            f" convert_from(error, 'UTF8')::jsonb ->> 'name' = {arg(where.error_name)}"
        )
    return clauses


class PostgresOpsLog:
    _db: Any

    async def _write(self, job: Callable[[Any], Awaitable[T]], *, wakes: bool = False) -> T:
        raise NotImplementedError

    async def select_instances(
        self, workflow_pk: int, where: InstanceFilter, after: tuple[int, str] | None, limit: int
    ) -> list[Any]:
        from stepstone.storage.postgres_worker import INSTANCE_COLUMNS, instance_row

        arg = _Args()
        clauses = _where(workflow_pk, where, arg)
        if after is not None:
            clauses.append(f"(created_on, id) > ({arg(after[0])}, {arg(after[1])})")
        sql = (
            f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE {' AND '.join(clauses)}"
            f" ORDER BY created_on, id LIMIT {arg(limit)}"
        )
        rows = await self._db.read(lambda c: c.fetch(sql, *arg.values))
        return [instance_row(r) for r in rows]

    async def count_selected(self, workflow_pk: int, where: InstanceFilter) -> int:
        arg = _Args()
        clauses = _where(workflow_pk, where, arg)
        sql = f"SELECT count(*) FROM instances WHERE {' AND '.join(clauses)}"
        return int(await self._db.read(lambda c: c.fetchval(sql, *arg.values)))

    async def create_bulk_job(self, job: BulkJobRecord) -> None:
        async def run(conn: Any) -> None:
            await conn.execute(
                f"INSERT INTO bulk_jobs ({_JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7,"
                " $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
                job.id,
                job.account_id,
                job.workflow_name,
                job.action,
                job.spec,
                job.actor,
                job.status,
                job.matched,
                job.done,
                job.skipped,
                job.failed,
                None if job.cursor is None else job.cursor[0],
                None if job.cursor is None else job.cursor[1],
                job.lease_owner,
                job.lease_expires,
                job.error,
                job.created_on,
                job.modified_on,
                job.finished_on,
            )

        await self._write(run)

    async def get_bulk_job(self, account_id: str, job_id: str) -> BulkJobRecord | None:
        row = await self._db.read(
            lambda c: c.fetchrow(
                f"SELECT {_JOB_COLUMNS} FROM bulk_jobs WHERE account_id = $1 AND id = $2",
                account_id,
                job_id,
            )
        )
        return _job(row) if row else None

    async def list_bulk_jobs(
        self, account_id: str, workflow_name: str | None, limit: int
    ) -> list[BulkJobRecord]:
        arg = _Args()
        sql = f"SELECT {_JOB_COLUMNS} FROM bulk_jobs WHERE account_id = {arg(account_id)}"
        if workflow_name is not None:
            sql += f" AND workflow_name = {arg(workflow_name)}"
        sql += f" ORDER BY created_on DESC, id DESC LIMIT {arg(limit)}"
        rows = await self._db.read(lambda c: c.fetch(sql, *arg.values))
        return [_job(r) for r in rows]

    async def claim_bulk_job(self, owner: str, now: int, lease_ms: int) -> BulkJobRecord | None:
        # Every worker asks every few seconds: a read answers the usual "nothing to do".
        waiting = await self._db.read(
            lambda c: c.fetchval(
                "SELECT 1 FROM bulk_jobs WHERE status = $1"
                " OR (status = $2 AND (lease_expires IS NULL OR lease_expires <= $3)) LIMIT 1",
                BULK_QUEUED,
                BULK_RUNNING,
                now,
            )
        )
        if waiting is None:
            return None

        async def run(conn: Any) -> BulkJobRecord | None:
            row = await conn.fetchrow(
                f"UPDATE bulk_jobs SET status = $1, lease_owner = $2, lease_expires = $3,"
                " modified_on = $4 WHERE id = (SELECT id FROM bulk_jobs WHERE status = $5"
                " OR (status = $1 AND (lease_expires IS NULL OR lease_expires <= $4))"
                " ORDER BY created_on LIMIT 1 FOR UPDATE SKIP LOCKED)"
                f" RETURNING {_JOB_COLUMNS}",
                BULK_RUNNING,
                owner,
                now + lease_ms,
                now,
                BULK_QUEUED,
            )
            return None if row is None else _job(row)

        return await self._write(run)

    async def advance_bulk_job(
        self, job_id: str, owner: str, progress: BulkProgress, now: int, lease_ms: int
    ) -> bool:
        async def run(conn: Any) -> bool:
            held = await conn.fetchval(
                "SELECT 1 FROM bulk_jobs WHERE id = $1 AND lease_owner = $2 AND status = $3"
                " FOR UPDATE",
                job_id,
                owner,
                BULK_RUNNING,
            )
            if held is None:
                return False
            counts = {ITEM_DONE: 0, ITEM_SKIPPED: 0, ITEM_FAILED: 0}
            if progress.items:
                rows = await conn.fetch(
                    "INSERT INTO bulk_job_items (job_id, instance_id, outcome, reason)"
                    " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[])"
                    " ON CONFLICT (job_id, instance_id) DO UPDATE"
                    " SET outcome = excluded.outcome, reason = excluded.reason"
                    f" WHERE bulk_job_items.outcome = '{ITEM_PENDING}' RETURNING outcome",
                    job_id,
                    [i.instance_id for i in progress.items],
                    [i.outcome for i in progress.items],
                    [i.reason for i in progress.items],
                )
                for row in rows:
                    if row[0] in counts:
                        counts[row[0]] += 1
            ended = progress.finished is not None
            await conn.execute(
                "UPDATE bulk_jobs SET done = done + $1, skipped = skipped + $2,"
                " failed = failed + $3, cursor_created_on = $4, cursor_id = $5,"
                " lease_expires = $6, modified_on = $7, status = coalesce($8, status),"
                " error = coalesce($9, error), finished_on = $10,"
                " lease_owner = CASE WHEN $11 THEN NULL ELSE lease_owner END WHERE id = $12",
                counts[ITEM_DONE],
                counts[ITEM_SKIPPED],
                counts[ITEM_FAILED],
                None if progress.cursor is None else progress.cursor[0],
                None if progress.cursor is None else progress.cursor[1],
                None if ended else now + lease_ms,
                now,
                progress.finished,
                progress.error,
                now if ended else None,
                ended,
                job_id,
            )
            return True

        return await self._write(run)

    async def recorded_bulk_items(self, job_id: str, instance_ids: Sequence[str]) -> dict[str, str]:
        if not instance_ids:
            return {}
        rows = await self._db.read(
            lambda c: c.fetch(
                "SELECT instance_id, outcome FROM bulk_job_items"
                " WHERE job_id = $1 AND instance_id = ANY($2::text[])",
                job_id,
                list(instance_ids),
            )
        )
        return {r[0]: r[1] for r in rows}

    async def list_bulk_items(
        self, job_id: str, outcome: str | None, after: str | None, limit: int
    ) -> list[BulkItem]:
        arg = _Args()
        sql = (
            f"SELECT instance_id, outcome, reason FROM bulk_job_items WHERE job_id = {arg(job_id)}"
        )
        if outcome is not None:
            sql += f" AND outcome = {arg(outcome)}"
        if after is not None:
            sql += f" AND instance_id > {arg(after)}"
        sql += f" ORDER BY instance_id LIMIT {arg(limit)}"
        rows = await self._db.read(lambda c: c.fetch(sql, *arg.values))
        return [BulkItem(r[0], r[1], r[2]) for r in rows]

    async def cancel_bulk_job(self, account_id: str, job_id: str, now: int) -> bool:
        async def run(conn: Any) -> bool:
            status = await conn.execute(
                "UPDATE bulk_jobs SET status = 'cancelled', lease_owner = NULL,"
                " lease_expires = NULL, modified_on = $1, finished_on = $1"
                f" WHERE account_id = $2 AND id = $3 AND status NOT IN {_ENDED}",
                now,
                account_id,
                job_id,
            )
            return bool(status != "UPDATE 0")

        return await self._write(run)

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        async def run(conn: Any) -> None:
            await conn.executemany(
                "INSERT INTO audit_log (at, account_id, action, actor_kind, outcome, actor_name,"
                " actor_id, workflow_name, instance_id, detail, bulk_job_id)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                [
                    (
                        e.at,
                        e.account_id,
                        e.action,
                        e.actor_kind,
                        e.outcome,
                        e.actor_name,
                        e.actor_id,
                        e.workflow_name,
                        e.instance_id,
                        e.detail,
                        e.bulk_job_id,
                    )
                    for e in entries
                ],
            )

        if entries:
            await self._write(run)

    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]:
        arg = _Args()
        clauses = [f"account_id = {arg(query.account_id)}"]
        for column, value in (
            ("workflow_name", query.workflow_name),
            ("instance_id", query.instance_id),
            ("bulk_job_id", query.bulk_job_id),
        ):
            if value is not None:
                clauses.append(f"{column} = {arg(value)}")
        if query.actor is not None:
            who = arg(query.actor)
            clauses.append(f"(actor_name = {who} OR actor_id = {who} OR actor_kind = {who})")
        if query.actions:
            clauses.append(f"action = ANY({arg(list(query.actions))}::text[])")
        if query.since is not None:
            clauses.append(f"at >= {arg(query.since)}")
        if query.until is not None:
            clauses.append(f"at < {arg(query.until)}")
        if query.before is not None:
            clauses.append(f"seq < {arg(query.before)}")
        sql = (
            f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(clauses)}"
            f" ORDER BY seq DESC LIMIT {arg(query.limit)}"
        )
        rows = await self._db.read(lambda c: c.fetch(sql, *arg.values))
        return [_audit(r) for r in rows]

    async def delete_audit_before(self, at: int, limit: int) -> int:
        async def run(conn: Any) -> int:
            status = await conn.execute(
                "DELETE FROM audit_log WHERE seq IN"
                " (SELECT seq FROM audit_log WHERE at < $1 ORDER BY seq LIMIT $2)",
                at,
                limit,
            )
            return int(status.split()[-1])

        return await self._write(run)
