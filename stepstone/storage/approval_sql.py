"""Approval links' SQL, one text for both dialects (``?`` placeholders become ``$n``)."""

from __future__ import annotations

import re
from typing import Any

from stepstone.storage.base import ApprovalLinkRecord

KEY_INSERT = "INSERT INTO signing_keys (name, secret) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
KEY_SELECT = "SELECT secret FROM signing_keys WHERE name = ?"
LINK_INSERT = (
    "INSERT INTO approval_links (id, instance_pk, event_type, expires_at, created_on, title)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
LINK_SELECT = (
    "SELECT l.id, l.instance_pk, l.event_type, l.expires_at, l.created_on, l.title, l.used_on,"
    " w.name, i.id, w.account_id FROM approval_links l"
    " JOIN instances i ON i.pk = l.instance_pk JOIN workflows w ON w.pk = i.workflow_pk"
    " WHERE l.id = ?"
)
LINK_USE = "UPDATE approval_links SET used_on = ? WHERE id = ? AND used_on IS NULL"


def dollars(sql: str) -> str:
    """PostgreSQL's numbered placeholders for ``sql``'s ``?``s."""
    count = iter(range(1, 100))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


def link_args(link: ApprovalLinkRecord) -> tuple[Any, ...]:
    return (
        link.id,
        link.instance_pk,
        link.event_type,
        link.expires_at,
        link.created_on,
        link.title,
    )


def link_row(row: Any) -> ApprovalLinkRecord:
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
