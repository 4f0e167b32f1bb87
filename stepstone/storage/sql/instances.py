"""Reads of instances, their histories and streams, on either SQL store.

The reads a status poll and a step fetch make both go through ``instance_events_by_step``
(instance, step name, step kind, event id), never through the whole history: the step count is
kept in ``instance_step_counts`` by triggers (migrations sqlite/0009 and postgres/0014), the
instance-level facts are the first or last of the instance's few instance-level events, and one
step's events are one index range.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from stepstone.model.events import EventType
from stepstone.model.records import (
    EventRecord,
    InstanceQuery,
    InstanceRecord,
    InstanceSummary,
    WorkflowRecord,
)
from stepstone.storage.sql.rows import INSTANCE_COLUMNS, WORKFLOW_SELECT, workflow_row
from stepstone.storage.sql.session import Session, SqlStore

# Instance-level events (no step) of the instance ``i``, in event order, by index.
_LIFECYCLE = (
    "SELECT {pick} FROM instance_events e WHERE e.instance_pk = i.pk"
    " AND e.step_kind IS NULL AND e.step_name IS NULL AND e.type = '{type}'"
    " ORDER BY e.event_id {order} LIMIT 1"
)


def _summary_sql() -> str:
    """By instance id, account and workflow name (bound in that order), one read: no row when
    there is no such workflow; else the instance's row (all NULL when the workflow has no
    instance by that id) and its summary.

    The first workflow_queued and workflow_started are the instance's first events, so their
    probes stop at once. Only a terminated instance has a workflow_terminated event (a restart
    drops it), and it is among the last, so that probe runs from the end and only then.
    """
    steps = "SELECT s.steps FROM instance_step_counts s WHERE s.instance_pk = i.pk"
    queued = _LIFECYCLE.format(pick="e.ts", type=EventType.WORKFLOW_QUEUED, order="ASC")
    started = _LIFECYCLE.format(pick="e.ts", type=EventType.WORKFLOW_STARTED, order="ASC")
    terminated = _LIFECYCLE.format(
        pick="e.event_id", type=EventType.WORKFLOW_TERMINATED, order="DESC"
    )
    prefixed = ", ".join("i." + c.strip() for c in INSTANCE_COLUMNS.split(","))
    return (
        f"SELECT {prefixed}, COALESCE(({steps}), 0), ({queued}),"
        f" CASE WHEN i.started_on IS NULL THEN ({started}) END,"
        f" CASE WHEN i.status = 'terminated' THEN ({terminated}) END"
        " FROM workflows w LEFT JOIN instances i ON i.workflow_pk = w.pk AND i.id = ?"
        " WHERE w.account_id = ? AND w.name = ?"
    )


def _summary_row(row: Sequence[Any]) -> tuple[InstanceRecord, InstanceSummary]:
    *record, step_count, queued_at, started_at, terminated = row
    summary = InstanceSummary(
        step_count=int(step_count),
        queued_at=queued_at,
        started_at=started_at,
        terminated=terminated is not None,
    )
    return InstanceRecord(*record), summary


_SUMMARY = _summary_sql()
_INSTANCE_FIELDS = len(INSTANCE_COLUMNS.split(","))
# A workflow with its current version, and its instance by id if it has one: one read.
_PICKED, _, _FROM = WORKFLOW_SELECT.partition(" FROM ")
_WORKFLOW_INSTANCE = (
    f"{_PICKED}, {', '.join('i.' + c.strip() for c in INSTANCE_COLUMNS.split(','))}"
    f" FROM {_FROM} LEFT JOIN instances i ON i.workflow_pk = w.pk AND i.id = ?"
    " WHERE w.account_id = ? AND w.name = ?"
)
_EVENT_COLUMNS = "event_id, ts, type, step_kind, step_name, data"


class SqlInstanceReads(SqlStore):
    async def get_instance(self, workflow_pk: int, instance_id: str) -> InstanceRecord | None:
        async def read(s: Session) -> InstanceRecord | None:
            row = await s.one(
                f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE workflow_pk = ? AND id = ?",
                workflow_pk,
                instance_id,
            )
            return InstanceRecord(*row) if row else None

        return await self._sql_read(read)

    async def get_workflow_instance(
        self, account_id: str, workflow_name: str, instance_id: str
    ) -> tuple[WorkflowRecord, InstanceRecord | None] | None:
        async def read(s: Session) -> tuple[WorkflowRecord, InstanceRecord | None] | None:
            row = await s.one(_WORKFLOW_INSTANCE, instance_id, account_id, workflow_name)
            if row is None:
                return None
            instance = row[-_INSTANCE_FIELDS:]
            record = None if instance[0] is None else InstanceRecord(*instance)
            return workflow_row(row[:-_INSTANCE_FIELDS]), record

        return await self._sql_read(read)

    async def get_instance_summary(
        self, account_id: str, workflow_name: str, instance_id: str
    ) -> tuple[bool, tuple[InstanceRecord, InstanceSummary] | None]:
        async def read(s: Session) -> tuple[bool, tuple[InstanceRecord, InstanceSummary] | None]:
            row = await s.one(_SUMMARY, instance_id, account_id, workflow_name)
            if row is None:
                return False, None
            # The row's first column is the instance's pk, never NULL for an instance.
            return True, None if row[0] is None else _summary_row(row)

        return await self._sql_read(read)

    async def load_step_events(
        self, instance_pk: int, step_name: str, kinds: Sequence[str]
    ) -> list[EventRecord]:
        # A few kinds: listed, so that the index serves each as a range.
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM instance_events{self.dialect.by_step}"
            f" WHERE instance_pk = ? AND step_kind IN ({', '.join('?' * len(kinds))})"
            " AND step_name = ? ORDER BY event_id"
        )

        async def read(s: Session) -> list[EventRecord]:
            return [EventRecord(*r) for r in await s.all(sql, instance_pk, *kinds, step_name)]

        return await self._sql_read(read)

    async def list_instances(self, workflow_pk: int, query: InstanceQuery) -> list[InstanceRecord]:
        clauses = ["workflow_pk = ?"]
        args: list[Any] = [workflow_pk]
        if query.status is not None:
            clauses.append("status = ?")
            args.append(query.status)
        if query.created_from is not None:
            clauses.append("created_on >= ?")
            args.append(query.created_from)
        if query.created_to is not None:
            clauses.append("created_on <= ?")
            args.append(query.created_to)
        order = "ASC" if query.ascending else "DESC"
        if query.after is not None:
            clauses.append(
                f"(created_on, id) {'>' if query.ascending else '<'}"
                " (CAST(? AS BIGINT), CAST(? AS TEXT))"
            )
            args.extend(query.after)
        sql = (
            f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE {' AND '.join(clauses)}"
            f" ORDER BY created_on {order}, id {order} LIMIT ? OFFSET ?"
        )

        async def read(s: Session) -> list[InstanceRecord]:
            rows = await s.all(sql, *args, query.limit, query.offset)
            return [InstanceRecord(*r) for r in rows]

        return await self._sql_read(read)

    async def load_events(
        self, instance_pk: int, after_event_id: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        return await self._events_after(instance_pk, after_event_id, limit)

    async def _events_after(
        self, instance_pk: int, after_event_id: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        async def read(s: Session) -> list[EventRecord]:
            rows = await s.all(
                f"SELECT {_EVENT_COLUMNS} FROM instance_events"
                " WHERE instance_pk = ? AND event_id > ? ORDER BY event_id LIMIT ?",
                instance_pk,
                after_event_id,
                self.dialect.no_limit if limit is None else limit,
            )
            return [EventRecord(*r) for r in rows]

        return await self._sql_read(read)

    async def _latest_event_ids(self, pks: Sequence[int]) -> dict[int, int]:
        args: list[Any] = []
        sql = (
            "SELECT i.pk, coalesce((SELECT max(event_id) FROM instance_events"
            " WHERE instance_pk = i.pk), 0) FROM instances i"
            f" WHERE {self.dialect.one_of('i.pk', pks, args, 'bigint')}"
        )

        async def read(s: Session) -> dict[int, int]:
            return {int(pk): int(newest) for pk, newest in await s.all(sql, *args)}

        return await self._sql_read(read)

    async def read_stream(
        self, instance_pk: int, step_name: str, chunks: int
    ) -> AsyncIterator[bytes]:
        for chunk_no in range(chunks):

            async def read(s: Session, chunk_no: int = chunk_no) -> bytes | None:
                row = await s.one(
                    "SELECT data FROM stream_chunks WHERE instance_pk = ? AND step_name = ?"
                    " AND chunk_no = ?",
                    instance_pk,
                    step_name,
                    chunk_no,
                )
                return None if row is None else bytes(row[0])

            data = await self._sql_read(read)
            if data is None:
                raise RuntimeError(f"stream chunk {chunk_no} of {step_name!r} is missing")
            yield data
