"""An operator's change of an instance (pause, resume, terminate, restart...), on either SQL
store: the status check and the changes, given the ``Transition`` the model decided.

Each store wraps these in its own transaction with what it does besides: PostgreSQL writes the
events queued for the instance's claim first and notifies; SQLite wakes its own workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stepstone.model.records import EventRecord
from stepstone.model.retention import DEFAULT_RETENTION_MS
from stepstone.model.statuses import TERMINAL, Status
from stepstone.storage.base import Conflict, NewEvent, Transition
from stepstone.storage.sql.dialect import Dialect
from stepstone.storage.sql.session import Row, Session


async def insert_events(s: Session, instance_pk: int, events: Sequence[NewEvent]) -> None:
    if events:
        await s.run_many(
            "INSERT INTO instance_events (instance_pk, ts, type, step_kind, step_name, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(instance_pk, e.ts, e.type, e.step_kind, e.step_name, e.data) for e in events],
        )


async def expiry(s: Session, instance_pk: int, status: str, now: int) -> int:
    """When a finished instance expires: instance, version, account, workflow fallback, default."""
    column = "success_retention_ms" if status == Status.COMPLETE else "error_retention_ms"
    row = await s.one(
        f"SELECT COALESCE(i.{column}, v.{column}, s.{column}, w.retention_fallback_ms,"
        " CAST(? AS BIGINT))"
        " FROM instances i JOIN versions v ON v.id = i.version_id"
        " JOIN workflows w ON w.pk = i.workflow_pk"
        " LEFT JOIN account_settings s ON s.account_id = w.account_id WHERE i.pk = ?",
        DEFAULT_RETENTION_MS,
        instance_pk,
    )
    assert row is not None
    return now + int(row[0])


async def held_in(s: Session, dialect: Dialect, instance_pk: int, expected_status: str) -> Row:
    """The instance's ``(status, epoch, lease_owner)``, locked; ``Conflict`` unless its status is
    ``expected_status``."""
    row = await s.one(
        f"SELECT status, epoch, lease_owner FROM instances WHERE pk = ?{dialect.lock_rows}",
        instance_pk,
    )
    if row is None or row[0] != expected_status:
        raise Conflict(None if row is None else row[0])
    return row


async def apply(s: Session, dialect: Dialect, instance_pk: int, t: Transition, now: int) -> None:
    """Make the changes ``t`` names, to the row and the history, after ``held_in``."""
    sets = ["status = ?", "modified_on = ?"]
    args: list[Any] = [t.status, now]
    if t.runnable:
        sets += ["runnable_at = ?", "priority = ?", "wake_seq = wake_seq + 1"]
        args += [now if t.runnable_at is None else t.runnable_at, t.priority]
    elif t.status in TERMINAL or t.status == Status.PAUSED:
        sets.append("runnable_at = NULL")
    if t.release_worker:
        # The lease stays until its holder stops (release_stopped) or it expires.
        sets.append("epoch = epoch + 1")
    if t.ended:
        sets += ["ended_on = ?", "expires_at = ?"]
        args += [now, await expiry(s, instance_pk, t.status, now)]
    if t.paused_at is not None:
        sets.append("paused_at = ?")
        args.append(t.paused_at)
    if t.clear_paused_at:
        sets.append("paused_at = NULL")
    sets.append("control = ?")
    args.append(t.control)
    if t.error is not None:
        sets.append("error = ?")
        args.append(t.error)
    if t.clear_outcome:
        sets += [
            "output = NULL",
            "error = NULL",
            "rollback = NULL",
            "ended_on = NULL",
            "started_on = NULL",
            "expires_at = NULL",
        ]
    await s.run(f"UPDATE instances SET {', '.join(sets)} WHERE pk = ?", *args, instance_pk)
    await _reset(s, dialect, instance_pk, t)
    if t.closing is not None:
        log = await s.all(
            "SELECT event_id, ts, type, step_kind, step_name, data FROM instance_events"
            " WHERE instance_pk = ? ORDER BY event_id",
            instance_pk,
        )
        await insert_events(s, instance_pk, t.closing([EventRecord(*r) for r in log]))
    await insert_events(s, instance_pk, t.events)


async def _reset(s: Session, dialect: Dialect, instance_pk: int, t: Transition) -> None:
    """What a restart takes away: the history (all of it, or from a step on) with the events
    waiting to be consumed unless kept, and the streamed outputs."""
    if t.reset_history:
        await _delete(s, dialect, "instance_events", instance_pk, "event_id", t.reset_history)
        if not t.keep_pending:
            await s.run("DELETE FROM pending_events WHERE instance_pk = ?", instance_pk)
    if t.reset_streams:
        await _delete(s, dialect, "stream_chunks", instance_pk, "step_name", t.reset_streams)


async def _delete(
    s: Session,
    dialect: Dialect,
    table: str,
    instance_pk: int,
    column: str,
    which: bool | Sequence[int] | Sequence[str],
) -> None:
    """The instance's rows of ``table``: all of them, or those whose ``column`` is listed."""
    if which is True:
        await s.run(f"DELETE FROM {table} WHERE instance_pk = ?", instance_pk)
        return
    listed = list(which)  # type: ignore[arg-type]
    args: list[Any] = [instance_pk]
    kind = "bigint" if isinstance(listed[0], int) else "text"
    some = dialect.one_of(column, listed, args, kind)
    await s.run(f"DELETE FROM {table} WHERE instance_pk = ? AND {some}", *args)
