"""Reads of what is registered (workflows, versions, instance counts) and each account's
retention, on either SQL store."""

from __future__ import annotations

from typing import Any

from stepstone.model.records import VersionRecord, WorkflowRecord
from stepstone.storage.sql.rows import VERSION_COLUMNS, WORKFLOW_SELECT, version_row, workflow_row
from stepstone.storage.sql.session import Session, SqlStore


class SqlCatalog(SqlStore):
    async def get_workflow(self, account_id: str, name: str) -> WorkflowRecord | None:
        async def read(s: Session) -> WorkflowRecord | None:
            row = await s.one(
                f"{WORKFLOW_SELECT} WHERE w.account_id = ? AND w.name = ?", account_id, name
            )
            return workflow_row(row) if row else None

        return await self._sql_read(read)

    async def list_workflows(
        self, account_id: str | None, search: str | None, offset: int, limit: int
    ) -> tuple[list[WorkflowRecord], int]:
        clauses, args = [], list[Any]()
        if account_id is not None:
            clauses.append("w.account_id = ?")
            args.append(account_id)
        if search:
            clauses.append(f"{self.dialect.position}(w.name, ?) > 0")
            args.append(search)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""

        async def read(s: Session) -> tuple[list[WorkflowRecord], int]:
            rows = await s.all(
                f"{WORKFLOW_SELECT}{where} ORDER BY w.name LIMIT ? OFFSET ?", *args, limit, offset
            )
            total = await s.one(f"SELECT count(*) FROM workflows w{where}", *args)
            assert total is not None
            return [workflow_row(r) for r in rows], int(total[0])

        return await self._sql_read(read)

    async def list_versions(
        self, workflow_pk: int, offset: int, limit: int
    ) -> tuple[list[VersionRecord], int]:
        # Versions of the same millisecond: later registrations first.
        sql = (
            f"SELECT {VERSION_COLUMNS} FROM versions WHERE workflow_pk = ?"
            f" ORDER BY created_on DESC, {self.dialect.insert_order} DESC LIMIT ? OFFSET ?"
        )

        async def read(s: Session) -> tuple[list[VersionRecord], int]:
            rows = await s.all(sql, workflow_pk, limit, offset)
            total = await s.one("SELECT count(*) FROM versions WHERE workflow_pk = ?", workflow_pk)
            assert total is not None
            return [version_row(r) for r in rows], int(total[0])

        return await self._sql_read(read)

    async def get_version(self, workflow_pk: int, version_id: str) -> VersionRecord | None:
        async def read(s: Session) -> VersionRecord | None:
            row = await s.one(
                f"SELECT {VERSION_COLUMNS} FROM versions WHERE workflow_pk = ? AND id = ?",
                workflow_pk,
                version_id,
            )
            return version_row(row) if row else None

        return await self._sql_read(read)

    async def count_instances(self, workflow_pk: int) -> dict[str, int]:
        async def read(s: Session) -> dict[str, int]:
            rows = await s.all(
                "SELECT status, count(*) FROM instances WHERE workflow_pk = ? GROUP BY status",
                workflow_pk,
            )
            return {str(status): int(n) for status, n in rows}

        return await self._sql_read(read)

    async def get_account_settings(self, account_id: str) -> tuple[int | None, int | None]:
        async def read(s: Session) -> tuple[int | None, int | None]:
            row = await s.one(
                "SELECT success_retention_ms, error_retention_ms FROM account_settings"
                " WHERE account_id = ?",
                account_id,
            )
            return (row[0], row[1]) if row else (None, None)

        return await self._sql_read(read)

    async def put_account_settings(
        self, account_id: str, success_retention_ms: int | None, error_retention_ms: int | None
    ) -> None:
        async def write(s: Session) -> None:
            await s.run(
                "INSERT INTO account_settings VALUES (?, ?, ?) ON CONFLICT (account_id)"
                " DO UPDATE SET success_retention_ms = excluded.success_retention_ms,"
                " error_retention_ms = excluded.error_retention_ms",
                account_id,
                success_retention_ms,
                error_retention_ms,
            )

        await self._sql_write(write)
