"""Parent/child links on SQLite (``step.run_workflow``, a Stepstone extension).

The transaction that ends a child makes its parent runnable, as a delivered event does. The
migrations runner splits on ';' and so holds no triggers: the store installs a TEMP trigger on
its one write connection at open. The trigger also calls back into Python, so that the
workers hear of the parent after the commit: a child's end is otherwise a write that wakes
nobody (an ended instance leaves nothing to claim).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence

from stepstone.model.statuses import TERMINAL
from stepstone.storage.base import Claim, Fenced, InstanceLink, InstanceLinks

_TERMINAL_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(TERMINAL)) + ")"

_TRIGGER = f"""
CREATE TEMP TRIGGER IF NOT EXISTS stepstone_child_ended AFTER UPDATE OF status ON instances
FOR EACH ROW WHEN NEW.status IN {_TERMINAL_SQL} AND OLD.status NOT IN {_TERMINAL_SQL}
    AND EXISTS (SELECT 1 FROM child_links WHERE child_pk = NEW.pk)
BEGIN
    UPDATE instances SET wake_seq = wake_seq + 1,
        runnable_at = CASE WHEN status IN ('waiting', 'running', 'waitingForPause',
            'rollingBack') THEN NEW.modified_on ELSE runnable_at END,
        priority = CASE WHEN status = 'waiting' THEN 0 ELSE priority END
    WHERE pk = (SELECT parent_pk FROM child_links WHERE child_pk = NEW.pk);
    SELECT stepstone_parent_woken();
END
"""


def install(conn: sqlite3.Connection, fire_wake: Callable[[], None]) -> None:
    """Install the trigger on the write connection (nothing before the migration ran)."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'child_links'"
    ).fetchone()
    if found is None:
        return

    def woken() -> None:
        # Runs inside the ending transaction: the wake must follow its commit, which the
        # writer makes before it returns to the loop.
        try:
            asyncio.get_running_loop().call_soon(fire_wake)
        except RuntimeError:
            fire_wake()

    conn.create_function("stepstone_parent_woken", 0, woken)
    conn.execute(_TRIGGER)


# A parent made runnable by the deletion of a child it waits on, as the child's end would make
# it: its step then finds the child gone (ChildInstanceGone). "Since its last change" is a time
# in the past on whichever clock the engine runs.
_WAKE_PARENT = """
UPDATE instances SET wake_seq = wake_seq + 1,
    runnable_at = CASE WHEN status IN ('waiting', 'running', 'waitingForPause', 'rollingBack')
        THEN min(coalesce(runnable_at, modified_on), modified_on) ELSE runnable_at END,
    priority = CASE WHEN status = 'waiting' THEN 0 ELSE priority END
WHERE pk = ?
"""


def unlink_deleted(conn: sqlite3.Connection, pks: Sequence[int]) -> None:
    """Drop the child and approval links of instances being deleted (before their rows go),
    so no link outlives its instance or passes to a later one given the same pk; wake each
    parent, not itself deleted, still waiting on a deleted child."""
    deleted = set(pks)
    parents: set[int] = set()
    for pk in pks:
        row = conn.execute(
            "SELECT l.parent_pk FROM child_links l JOIN instances c ON c.pk = l.child_pk"
            f" WHERE l.child_pk = ? AND l.detached = 0 AND c.status NOT IN {_TERMINAL_SQL}",
            (pk,),
        ).fetchone()
        if row is not None and row[0] not in deleted:
            parents.add(row[0])
    params = [(pk,) for pk in pks]
    conn.executemany("DELETE FROM child_links WHERE child_pk = ?", params)
    conn.executemany("DELETE FROM child_links WHERE parent_pk = ?", params)
    conn.executemany("DELETE FROM approval_links WHERE instance_pk = ?", params)
    if parents:
        conn.executemany(_WAKE_PARENT, [(pk,) for pk in sorted(parents)])
        # The trigger's callback: the workers hear of the parents after the commit.
        conn.execute("SELECT stepstone_parent_woken()")


def link_child(conn: sqlite3.Connection, claim: Claim, child_pk: int, detached: bool) -> str | None:
    row = conn.execute("SELECT epoch FROM instances WHERE pk = ?", (claim.instance.pk,)).fetchone()
    if row is None or row[0] != claim.epoch:
        raise Fenced(claim.instance.id)
    conn.execute(
        "INSERT INTO child_links (child_pk, parent_pk, detached) VALUES (?, ?, ?)"
        " ON CONFLICT (child_pk) DO NOTHING",
        (child_pk, claim.instance.pk, int(detached)),
    )
    status = conn.execute("SELECT status FROM instances WHERE pk = ?", (child_pk,)).fetchone()
    return None if status is None else str(status[0])


_LINKED = (
    "SELECT w.name, i.id, i.status, l.detached FROM child_links l"
    " JOIN instances i ON i.pk = l.{other} JOIN workflows w ON w.pk = i.workflow_pk"
    " WHERE l.{this} = ? ORDER BY l.child_pk"
)


def instance_links(conn: sqlite3.Connection, instance_pk: int) -> InstanceLinks:
    parent = conn.execute(
        _LINKED.format(other="parent_pk", this="child_pk"), (instance_pk,)
    ).fetchone()
    children = conn.execute(
        _LINKED.format(other="child_pk", this="parent_pk"), (instance_pk,)
    ).fetchall()
    return InstanceLinks(
        parent=None if parent is None else InstanceLink(parent[0], parent[1], parent[2]),
        children=tuple(InstanceLink(r[0], r[1], r[2], bool(r[3])) for r in children),
    )
