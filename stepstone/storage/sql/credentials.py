"""What grants access, on either SQL store: API tokens (stored by hash), the signing keys of
approval links, and the links themselves (an extension, not Cloudflare's)."""

from __future__ import annotations

import orjson

from stepstone.model.records import ApprovalLinkRecord, TokenRecord
from stepstone.storage.sql.rows import TOKEN_COLUMNS, token_row
from stepstone.storage.sql.session import Row, Session, SqlStore

_LINK_SELECT = (
    "SELECT l.id, l.instance_pk, l.event_type, l.expires_at, l.created_on, l.title, l.used_on,"
    " w.name, i.id, w.account_id FROM approval_links l"
    " JOIN instances i ON i.pk = l.instance_pk JOIN workflows w ON w.pk = i.workflow_pk"
    " WHERE l.id = ?"
)


def _link(row: Row) -> ApprovalLinkRecord:
    return ApprovalLinkRecord(
        id=row[0],
        instance_pk=row[1],
        event_type=row[2],
        expires_at=row[3],
        created_on=row[4],
        title=row[5],
        used_on=row[6],
        workflow=row[7],
        instance_id=row[8],
        account_id=row[9],
    )


class SqlCredentials(SqlStore):
    async def create_token(self, token: TokenRecord, token_hash: str) -> None:
        async def write(s: Session) -> None:
            await s.run(
                "INSERT INTO api_tokens (id, name, token_hash, permissions, accounts, created_on)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                token.id,
                token.name,
                token_hash,
                orjson.dumps(list(token.permissions)),
                None if token.accounts is None else orjson.dumps(list(token.accounts)),
                token.created_on,
            )

        await self._sql_write(write)

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        async def read(s: Session) -> TokenRecord | None:
            row = await s.one(
                f"SELECT {TOKEN_COLUMNS} FROM api_tokens"
                " WHERE token_hash = ? AND revoked_on IS NULL",
                token_hash,
            )
            return token_row(row) if row else None

        return await self._sql_read(read)

    async def list_tokens(self) -> list[TokenRecord]:
        async def read(s: Session) -> list[TokenRecord]:
            rows = await s.all(f"SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_on")
            return [token_row(r) for r in rows]

        return await self._sql_read(read)

    async def revoke_token(self, token_id: str, now: int) -> bool:
        async def write(s: Session) -> bool:
            changed = await s.run(
                "UPDATE api_tokens SET revoked_on = ? WHERE id = ? AND revoked_on IS NULL",
                now,
                token_id,
            )
            return changed > 0

        return await self._sql_write(write)

    async def signing_key(self, name: str, candidate: bytes) -> bytes:
        async def write(s: Session) -> bytes:
            # The first candidate stored wins; every process then signs with that one.
            await s.run(
                "INSERT INTO signing_keys (name, secret) VALUES (?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                name,
                candidate,
            )
            row = await s.one("SELECT secret FROM signing_keys WHERE name = ?", name)
            assert row is not None
            return bytes(row[0])

        return await self._sql_write(write)

    async def create_approval_link(self, link: ApprovalLinkRecord) -> None:
        async def write(s: Session) -> None:
            await s.run(
                "INSERT INTO approval_links"
                " (id, instance_pk, event_type, expires_at, created_on, title)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                link.id,
                link.instance_pk,
                link.event_type,
                link.expires_at,
                link.created_on,
                link.title,
            )

        await self._sql_write(write)

    async def get_approval_link(self, link_id: str) -> ApprovalLinkRecord | None:
        async def read(s: Session) -> ApprovalLinkRecord | None:
            row = await s.one(_LINK_SELECT, link_id)
            return None if row is None else _link(row)

        return await self._sql_read(read)

    async def use_approval_link(self, link_id: str, now: int) -> bool:
        async def write(s: Session) -> bool:
            changed = await s.run(
                "UPDATE approval_links SET used_on = ? WHERE id = ? AND used_on IS NULL",
                now,
                link_id,
            )
            return changed == 1

        return await self._sql_write(write)
