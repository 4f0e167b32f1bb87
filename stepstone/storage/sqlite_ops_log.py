"""Bulk jobs and the audit log on SQLite (operator extensions, not Cloudflare's).

A mixin of ``SqliteStorage``: reads go through its ``_read``, writes through its one writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
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
_INSTANCE_COLUMNS = (
    "pk, workflow_pk, id, version_id, status, trigger_source, params, schedule, created_on,"
    " modified_on, started_on, ended_on, output, error, rollback, control, paused_at,"
    " success_retention_ms, error_retention_ms"
)
_ENDED = "(" + ", ".join(f"'{s}'" for s in BULK_ENDED) + ")"


def _job(row: Sequence[Any]) -> BulkJobRecord:
    values = list(row)
    cursor = None if values[11] is None else (int(values[11]), str(values[12]))
    return BulkJobRecord(*values[:11], cursor, *values[13:])  # type: ignore[call-arg]


def _audit(row: Sequence[Any]) -> AuditEntry:
    return AuditEntry(*row)


def _where(workflow_pk: int, where: InstanceFilter) -> tuple[list[str], list[Any]]:
    clauses = ["workflow_pk = ?"]
    args: list[Any] = [workflow_pk]
    if where.statuses:
        clauses.append(f"status IN ({', '.join('?' for _ in where.statuses)})")
        args.extend(where.statuses)
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
        # The error column holds orjson bytes; read as text so the JSON1 functions parse it.
        clauses.append("error IS NOT NULL AND json_extract(CAST(error AS TEXT), '$.name') = ?")
        args.append(where.error_name)
    return clauses, args


class SqliteOpsLog:
    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    def _write(self, job: Callable[[sqlite3.Connection], T]) -> Any:
        raise NotImplementedError

    async def select_instances(
        self, workflow_pk: int, where: InstanceFilter, after: tuple[int, str] | None, limit: int
    ) -> list[Any]:
        from stepstone.storage.base import InstanceRecord

        clauses, args = _where(workflow_pk, where)
        if after is not None:
            clauses.append("(created_on, id) > (?, ?)")
            args.extend(after)
        sql = (
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE {' AND '.join(clauses)}"
            " ORDER BY created_on, id LIMIT ?"
        )
        rows = self._read(lambda c: c.execute(sql, [*args, limit]).fetchall())
        return [InstanceRecord(*r) for r in rows]

    async def count_selected(self, workflow_pk: int, where: InstanceFilter) -> int:
        clauses, args = _where(workflow_pk, where)
        sql = f"SELECT count(*) FROM instances WHERE {' AND '.join(clauses)}"
        return int(self._read(lambda c: c.execute(sql, args).fetchone()[0]))

    async def create_bulk_job(self, job: BulkJobRecord) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO bulk_jobs ({_JOB_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
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
                ),
            )

        await self._write(run)

    async def get_bulk_job(self, account_id: str, job_id: str) -> BulkJobRecord | None:
        row = self._read(
            lambda c: c.execute(
                f"SELECT {_JOB_COLUMNS} FROM bulk_jobs WHERE account_id = ? AND id = ?",
                (account_id, job_id),
            ).fetchone()
        )
        return _job(row) if row else None

    async def list_bulk_jobs(
        self, account_id: str, workflow_name: str | None, limit: int
    ) -> list[BulkJobRecord]:
        sql = f"SELECT {_JOB_COLUMNS} FROM bulk_jobs WHERE account_id = ?"
        args: list[Any] = [account_id]
        if workflow_name is not None:
            sql += " AND workflow_name = ?"
            args.append(workflow_name)
        sql += " ORDER BY created_on DESC, id DESC LIMIT ?"
        rows = self._read(lambda c: c.execute(sql, [*args, limit]).fetchall())
        return [_job(r) for r in rows]

    async def claim_bulk_job(self, owner: str, now: int, lease_ms: int) -> BulkJobRecord | None:
        claimable = (
            "SELECT id FROM bulk_jobs WHERE status = ?"
            " OR (status = ? AND (lease_expires IS NULL OR lease_expires <= ?))"
            " ORDER BY created_on LIMIT 1"
        )
        args = (BULK_QUEUED, BULK_RUNNING, now)
        # Every worker asks every few seconds: a read answers the usual "nothing to do"
        # without taking the one write lock.
        if self._read(lambda c: c.execute(claimable, args).fetchone()) is None:
            return None

        def run(conn: sqlite3.Connection) -> BulkJobRecord | None:
            row = conn.execute(claimable, args).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE bulk_jobs SET status = ?, lease_owner = ?, lease_expires = ?,"
                " modified_on = ? WHERE id = ?",
                (BULK_RUNNING, owner, now + lease_ms, now, row[0]),
            )
            found = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM bulk_jobs WHERE id = ?", (row[0],)
            ).fetchone()
            return _job(found)

        result: BulkJobRecord | None = await self._write(run)
        return result

    async def advance_bulk_job(
        self, job_id: str, owner: str, progress: BulkProgress, now: int, lease_ms: int
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            held = conn.execute(
                "SELECT 1 FROM bulk_jobs WHERE id = ? AND lease_owner = ? AND status = ?",
                (job_id, owner, BULK_RUNNING),
            ).fetchone()
            if held is None:
                return False
            counts = {ITEM_DONE: 0, ITEM_SKIPPED: 0, ITEM_FAILED: 0}
            for item in progress.items:
                cursor = conn.execute(
                    "INSERT INTO bulk_job_items (job_id, instance_id, outcome, reason)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (job_id, instance_id) DO UPDATE"
                    " SET outcome = excluded.outcome, reason = excluded.reason"
                    f" WHERE bulk_job_items.outcome = '{ITEM_PENDING}'",
                    (job_id, item.instance_id, item.outcome, item.reason),
                )
                if item.outcome in counts:
                    counts[item.outcome] += cursor.rowcount
            ended = progress.finished is not None
            conn.execute(
                "UPDATE bulk_jobs SET done = done + ?, skipped = skipped + ?,"
                " failed = failed + ?, cursor_created_on = ?, cursor_id = ?,"
                " lease_expires = ?, modified_on = ?, status = coalesce(?, status),"
                " error = coalesce(?, error), finished_on = ?,"
                " lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END WHERE id = ?",
                (
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
                ),
            )
            return True

        result: bool = await self._write(run)
        return result

    async def recorded_bulk_items(self, job_id: str, instance_ids: Sequence[str]) -> dict[str, str]:
        if not instance_ids:
            return {}
        marks = ", ".join("?" for _ in instance_ids)
        rows = self._read(
            lambda c: c.execute(
                "SELECT instance_id, outcome FROM bulk_job_items"
                f" WHERE job_id = ? AND instance_id IN ({marks})",
                [job_id, *instance_ids],
            ).fetchall()
        )
        return {r[0]: r[1] for r in rows}

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
        rows = self._read(lambda c: c.execute(sql, [*args, limit]).fetchall())
        return [BulkItem(*r) for r in rows]

    async def cancel_bulk_job(self, account_id: str, job_id: str, now: int) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE bulk_jobs SET status = 'cancelled', lease_owner = NULL,"
                " lease_expires = NULL, modified_on = ?, finished_on = ?"
                f" WHERE account_id = ? AND id = ? AND status NOT IN {_ENDED}",
                (now, now, account_id, job_id),
            )
            return cursor.rowcount > 0

        result: bool = await self._write(run)
        return result

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
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
            await self._write(run)

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
            clauses.append(f"action IN ({', '.join('?' for _ in query.actions)})")
            args.extend(query.actions)
        if query.since is not None:
            clauses.append("at >= ?")
            args.append(query.since)
        if query.until is not None:
            clauses.append("at < ?")
            args.append(query.until)
        if query.before is not None:
            clauses.append("seq < ?")
            args.append(query.before)
        sql = (
            f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(clauses)}"
            " ORDER BY seq DESC LIMIT ?"
        )
        rows = self._read(lambda c: c.execute(sql, [*args, query.limit]).fetchall())
        return [_audit(r) for r in rows]

    async def delete_audit_before(self, at: int, limit: int) -> int:
        def run(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM audit_log WHERE seq IN"
                " (SELECT seq FROM audit_log WHERE at < ? ORDER BY seq LIMIT ?)",
                (at, limit),
            )
            return cursor.rowcount

        result: int = await self._write(run)
        return result
