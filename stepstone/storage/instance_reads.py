"""The reads a status poll and a step fetch make, as SQL both dialects share.

Both go through ``instance_events_by_step`` (instance, step name, step kind, event id), never
through the whole history: the step count is kept in ``instance_step_counts`` by triggers
(migrations sqlite/0009 and postgres/0014), the instance-level facts are the first or last of the
instance's few instance-level events, and one step's events are one index range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stepstone.model.events import EventType
from stepstone.storage.base import InstanceRecord, InstanceSummary

# Instance-level events (no step) of the instance ``i``, in event order, by index.
_LIFECYCLE = (
    "SELECT {pick} FROM instance_events e WHERE e.instance_pk = i.pk"
    " AND e.step_kind IS NULL AND e.step_name IS NULL AND e.type = '{type}'"
    " ORDER BY e.event_id {order} LIMIT 1"
)


def summary_sql(columns: str, workflow_pk: str, instance_id: str) -> str:
    """The instance row (``columns``) and its summary; the placeholders name the arguments.

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
    prefixed = ", ".join("i." + c.strip() for c in columns.split(","))
    return (
        f"SELECT {prefixed}, COALESCE(({steps}), 0), ({queued}),"
        f" CASE WHEN i.started_on IS NULL THEN ({started}) END,"
        f" CASE WHEN i.status = 'terminated' THEN ({terminated}) END"
        f" FROM instances i WHERE i.workflow_pk = {workflow_pk} AND i.id = {instance_id}"
    )


def summary_row(row: Sequence[Any]) -> tuple[InstanceRecord, InstanceSummary]:
    *record, step_count, queued_at, started_at, terminated = row
    summary = InstanceSummary(
        step_count=int(step_count),
        queued_at=queued_at,
        started_at=started_at,
        terminated=terminated is not None,
    )
    return InstanceRecord(*record), summary


STEP_EVENT_COLUMNS = "event_id, ts, type, step_kind, step_name, data"
