"""Reads of what is registered, and each account's retention, on either SQL store."""

from __future__ import annotations

from stepstone.model.records import VersionRecord
from stepstone.storage.sql.rows import VERSION_COLUMNS, version_row
from stepstone.storage.sql.session import Session, SqlStore


class SqlCatalog(SqlStore):
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
