"""Bulk jobs and the audit log, on either SQL store (operator extensions, not Cloudflare's).

Claiming a job takes the oldest claimable row (on PostgreSQL skipping rows another server
is claiming), so two servers never take the same job; every page's write checks the lease in
the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
from stepstone.model.records import InstanceRecord
from stepstone.storage.sql.dialect import Dialect
from stepstone.storage.sql.rows import INSTANCE_COLUMNS
from stepstone.storage.sql.session import Session, SqlStore

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
_CLAIMABLE = (
    "SELECT id FROM bulk_jobs WHERE status = ?"
    " OR (status = ? AND (lease_expires IS NULL OR lease_expires <= ?)) ORDER BY created_on"
    " LIMIT 1"
)
# Items recorded per statement: four arguments each, well within either's limit.
_ITEMS_AT_ONCE = 1000


def _job(row: Sequence[Any]) -> BulkJobRecord:
    values = list(row)
    cursor = None if values[11] is None else (int(values[11]), str(values[12]))
    return BulkJobRecord(*values[:11], cursor, *values[13:])  # type: ignore[call-arg]


def _audit(row: Sequence[Any]) -> AuditEntry:
    values = list(row)
    if values[9] is not None:
        values[9] = bytes(values[9])
    return AuditEntry(*values)


def _where(dialect: Dialect, workflow_pk: int, where: InstanceFilter) -> tuple[str, list[Any]]:
    args: list[Any] = [workflow_pk]
    clauses = ["workflow_pk = ?"]
    if where.statuses:
        clauses.append(dialect.one_of("status", where.statuses, args))
    if where.created_after is not None:
        clauses.append("created_on >= ?")
        args.append(where.created_after)
    if where.created_before is not None:
        clauses.append("created_on < ?")
        args.append(where.created_before)
    if where.id_prefix:
        clauses.append("substr(id, 1, ?) = ?")
        args.extend([len(where.id_prefix), where.id_prefix])
    if where.error_name is not None:
        clauses.append(f"error IS NOT NULL AND {dialect.json_text('error', 'name')} = ?")
        args.append(where.error_name)
    return " AND ".join(clauses), args


class SqlOpsLog(SqlStore):
    async def select_instances(
        self, workflow_pk: int, where: InstanceFilter, after: tuple[int, str] | None, limit: int
    ) -> list[Any]:
        clauses, args = _where(self.dialect, workflow_pk, where)
        if after is not None:
            clauses += " AND (created_on, id) > (?, ?)"
            args.extend(after)
        sql = (
            f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE {clauses}"
            " ORDER BY created_on, id LIMIT ?"
        )

        async def read(s: Session) -> list[Any]:
            return [InstanceRecord(*r) for r in await s.all(sql, *args, limit)]

        return await self._sql_read(read)

    async def count_selected(self, workflow_pk: int, where: InstanceFilter) -> int:
        clauses, args = _where(self.dialect, workflow_pk, where)

        async def read(s: Session) -> int:
            row = await s.one(f"SELECT count(*) FROM instances WHERE {clauses}", *args)
            assert row is not None
            return int(row[0])

        return await self._sql_read(read)

    async def create_bulk_job(self, job: BulkJobRecord) -> None:
        async def write(s: Session) -> None:
            await s.run(
                f"INSERT INTO bulk_jobs ({_JOB_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

        await self._sql_write(write)

    async def get_bulk_job(self, account_id: str, job_id: str) -> BulkJobRecord | None:
        async def read(s: Session) -> BulkJobRecord | None:
            row = await s.one(
                f"SELECT {_JOB_COLUMNS} FROM bulk_jobs WHERE account_id = ? AND id = ?",
                account_id,
                job_id,
            )
            return _job(row) if row else None

        return await self._sql_read(read)

    async def list_bulk_jobs(
        self, account_id: str, workflow_name: str | None, limit: int
    ) -> list[BulkJobRecord]:
        sql = f"SELECT {_JOB_COLUMNS} FROM bulk_jobs WHERE account_id = ?"
        args: list[Any] = [account_id]
        if workflow_name is not None:
            sql += " AND workflow_name = ?"
            args.append(workflow_name)
        sql += " ORDER BY created_on DESC, id DESC LIMIT ?"

        async def read(s: Session) -> list[BulkJobRecord]:
            return [_job(r) for r in await s.all(sql, *args, limit)]

        return await self._sql_read(read)

    async def claim_bulk_job(self, owner: str, now: int, lease_ms: int) -> BulkJobRecord | None:
        claimable = (BULK_QUEUED, BULK_RUNNING, now)

        # Every worker asks every few seconds: a read answers the usual "nothing to do"
        # without a write (SQLite's one write lock, a PostgreSQL transaction).
        async def waiting(s: Session) -> bool:
            return await s.one(_CLAIMABLE, *claimable) is not None

        if not await self._sql_read(waiting):
            return None

        async def claim(s: Session) -> BulkJobRecord | None:
            row = await s.one(
                "UPDATE bulk_jobs SET status = ?, lease_owner = ?, lease_expires = ?,"
                f" modified_on = ? WHERE id = ({_CLAIMABLE}{self.dialect.skip_locked})"
                f" RETURNING {_JOB_COLUMNS}",
                BULK_RUNNING,
                owner,
                now + lease_ms,
                now,
                *claimable,
            )
            return None if row is None else _job(row)

        return await self._sql_write(claim)

    async def advance_bulk_job(
        self, job_id: str, owner: str, progress: BulkProgress, now: int, lease_ms: int
    ) -> bool:
        lock = self.dialect.lock_rows

        async def write(s: Session) -> bool:
            held = await s.one(
                f"SELECT 1 FROM bulk_jobs WHERE id = ? AND lease_owner = ? AND status = ?{lock}",
                job_id,
                owner,
                BULK_RUNNING,
            )
            if held is None:
                return False
            counts = {ITEM_DONE: 0, ITEM_SKIPPED: 0, ITEM_FAILED: 0}
            items = progress.items
            for start in range(0, len(items), _ITEMS_AT_ONCE):
                chunk = items[start : start + _ITEMS_AT_ONCE]
                # An item already recorded keeps its outcome: a page redone after a crash.
                recorded = await s.all(
                    "INSERT INTO bulk_job_items (job_id, instance_id, outcome, reason) VALUES "
                    + ", ".join("(?, ?, ?, ?)" for _ in chunk)
                    + " ON CONFLICT (job_id, instance_id) DO UPDATE"
                    " SET outcome = excluded.outcome, reason = excluded.reason"
                    f" WHERE bulk_job_items.outcome = '{ITEM_PENDING}' RETURNING outcome",
                    *(v for i in chunk for v in (job_id, i.instance_id, i.outcome, i.reason)),
                )
                for (outcome,) in recorded:
                    if outcome in counts:
                        counts[outcome] += 1
            ended = progress.finished is not None
            await s.run(
                "UPDATE bulk_jobs SET done = done + ?, skipped = skipped + ?,"
                " failed = failed + ?, cursor_created_on = ?, cursor_id = ?,"
                " lease_expires = ?, modified_on = ?, status = coalesce(?, status),"
                " error = coalesce(?, error), finished_on = ?,"
                " lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END WHERE id = ?",
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

        return await self._sql_write(write)

    async def recorded_bulk_items(self, job_id: str, instance_ids: Sequence[str]) -> dict[str, str]:
        if not instance_ids:
            return {}
        args: list[Any] = [job_id]
        sql = (
            "SELECT instance_id, outcome FROM bulk_job_items WHERE job_id = ?"
            f" AND {self.dialect.one_of('instance_id', instance_ids, args)}"
        )

        async def read(s: Session) -> dict[str, str]:
            return {r[0]: r[1] for r in await s.all(sql, *args)}

        return await self._sql_read(read)

    async def list_bulk_items(
        self, job_id: str, outcome: str | None, after: str | None, limit: int
    ) -> list[BulkItem]:
        sql = "SELECT instance_id, outcome, reason FROM bulk_job_items WHERE job_id = ?"
        args: list[Any] = [job_id]
        if outcome is not None:
            sql += " AND outcome = ?"
            args.append(outcome)
        if after is not None:
            sql += " AND instance_id > ?"
            args.append(after)
        sql += " ORDER BY instance_id LIMIT ?"

        async def read(s: Session) -> list[BulkItem]:
            return [BulkItem(r[0], r[1], r[2]) for r in await s.all(sql, *args, limit)]

        return await self._sql_read(read)

    async def cancel_bulk_job(self, account_id: str, job_id: str, now: int) -> bool:
        async def write(s: Session) -> bool:
            changed = await s.run(
                "UPDATE bulk_jobs SET status = 'cancelled', lease_owner = NULL,"
                " lease_expires = NULL, modified_on = ?, finished_on = ?"
                f" WHERE account_id = ? AND id = ? AND status NOT IN {_ENDED}",
                now,
                now,
                account_id,
                job_id,
            )
            return changed > 0

        return await self._sql_write(write)

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        async def write(s: Session) -> None:
            await s.run_many(
                "INSERT INTO audit_log (at, account_id, action, actor_kind, outcome, actor_name,"
                " actor_id, workflow_name, instance_id, detail, bulk_job_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            await self._sql_write(write)

    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]:
        clauses = ["account_id = ?"]
        args: list[Any] = [query.account_id]
        for column, value in (
            ("workflow_name", query.workflow_name),
            ("instance_id", query.instance_id),
            ("bulk_job_id", query.bulk_job_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if query.actor is not None:
            clauses.append("(actor_name = ? OR actor_id = ? OR actor_kind = ?)")
            args.extend([query.actor] * 3)
        if query.actions:
            clauses.append(self.dialect.one_of("action", query.actions, args))
        for bound, at in (("at >= ?", query.since), ("at < ?", query.until)):
            if at is not None:
                clauses.append(bound)
                args.append(at)
        if query.before is not None:
            clauses.append("seq < ?")
            args.append(query.before)
        sql = (
            f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(clauses)}"
            " ORDER BY seq DESC LIMIT ?"
        )

        async def read(s: Session) -> list[AuditEntry]:
            return [_audit(r) for r in await s.all(sql, *args, query.limit)]

        return await self._sql_read(read)

    async def delete_audit_before(self, at: int, limit: int) -> int:
        async def write(s: Session) -> int:
            return await s.run(
                "DELETE FROM audit_log WHERE seq IN"
                " (SELECT seq FROM audit_log WHERE at < ? ORDER BY seq LIMIT ?)",
                at,
                limit,
            )

        return await self._sql_write(write)
