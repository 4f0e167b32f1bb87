"""Parent/child links on PostgreSQL (``step.run_workflow``, a Stepstone extension).

The wake itself is a trigger of the links' migration: whichever transaction ends a child (a
release, a batched release, a terminate) makes the parent runnable and notifies the workers
in that same transaction, so any worker takes the parent up without polling.
"""

from __future__ import annotations

from typing import Any

from stepstone.storage.base import InstanceLink, InstanceLinks

_LINKED = (
    "SELECT w.name, i.id, i.status, l.detached FROM child_links l"
    " JOIN instances i ON i.pk = l.{other} JOIN workflows w ON w.pk = i.workflow_pk"
    " WHERE l.{this} = $1 ORDER BY l.child_pk"
)


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
