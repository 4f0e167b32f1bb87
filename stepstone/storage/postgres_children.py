"""Parent/child links on PostgreSQL (``step.run_workflow``, a Stepstone extension).

The wake itself is a trigger of the links' migration: whichever transaction ends a child (a
release, a batched release, a terminate) makes the parent runnable and notifies the workers
in that same transaction, so any worker takes the parent up without polling (in the portable
mode, ``postgres_portable``, only the ending process's workers at once, others by polling).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stepstone.storage.base import InstanceLink, InstanceLinks

_LINKED = (
    "SELECT w.name, i.id, i.status, l.detached FROM child_links l"
    " JOIN instances i ON i.pk = l.{other} JOIN workflows w ON w.pk = i.workflow_pk"
    " WHERE l.{this} = $1 ORDER BY l.child_pk"
)


_TERMINAL = "('complete', 'errored', 'terminated')"


async def unlink_deleted(conn: Any, pks: Sequence[int]) -> None:
    """Drop the child and approval links of instances being deleted (before their rows go),
    so no link outlives its instance; wake each parent, not itself deleted, still waiting on
    a deleted child (as the child's end would), so its step finds the child gone. "Since its
    last change" is a time in the past on whichever clock the engine runs."""
    parents = await conn.fetch(
        "SELECT DISTINCT l.parent_pk FROM child_links l JOIN instances c ON c.pk = l.child_pk"
        " WHERE l.child_pk = ANY($1::bigint[]) AND l.detached = 0"
        f" AND c.status NOT IN {_TERMINAL} AND NOT l.parent_pk = ANY($1::bigint[])"
        " ORDER BY 1",
        pks,
    )
    await conn.execute(
        "DELETE FROM child_links WHERE child_pk = ANY($1::bigint[])"
        " OR parent_pk = ANY($1::bigint[])",
        pks,
    )
    await conn.execute("DELETE FROM approval_links WHERE instance_pk = ANY($1::bigint[])", pks)
    if parents:
        await conn.execute(
            "UPDATE instances SET wake_seq = wake_seq + 1,"
            " runnable_at = CASE WHEN status IN ('waiting', 'running', 'waitingForPause',"
            " 'rollingBack') THEN LEAST(runnable_at, modified_on) ELSE runnable_at END,"
            " priority = CASE WHEN status = 'waiting' THEN 0 ELSE priority END"
            " WHERE pk = ANY($1::bigint[])",
            [r[0] for r in parents],
        )
        if conn.push_wakes:  # not in the portable mode (postgres_portable)
            await conn.execute("SELECT pg_notify('stepstone_wake', '')")


async def link_child(conn: Any, parent_pk: int, child_pk: int, detached: bool) -> str | None:
    """The parent's row is locked and its epoch checked by the caller."""
    await conn.execute(
        "INSERT INTO child_links (child_pk, parent_pk, detached) VALUES ($1, $2, $3)"
        " ON CONFLICT (child_pk) DO NOTHING",
        child_pk,
        parent_pk,
        int(detached),
    )
    status = await conn.fetchval("SELECT status FROM instances WHERE pk = $1", child_pk)
    return None if status is None else str(status)


async def instance_links(conn: Any, instance_pk: int) -> InstanceLinks:
    parent = await conn.fetchrow(_LINKED.format(other="parent_pk", this="child_pk"), instance_pk)
    children = await conn.fetch(_LINKED.format(other="child_pk", this="parent_pk"), instance_pk)
    return InstanceLinks(
        parent=None if parent is None else InstanceLink(parent[0], parent[1], parent[2]),
        children=tuple(InstanceLink(r[0], r[1], r[2], bool(r[3])) for r in children),
    )
