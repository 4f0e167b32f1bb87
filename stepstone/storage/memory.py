"""The in-memory store (``memory://``): the storage contract in plain Python, no SQL.

Rows live in dicts (``storage/memory_rows.py``); every operation reads or changes them without
awaiting in between, so on one event loop each call is atomic, as a transaction is, and claims
from many workers at once are serialised as the SQL stores' are. Nothing outlives the store.
It is the second model the contract suite runs against: where it and a SQL store disagree,
one of them is wrong about ``storage/base.py``.

Its parts: ``memory_rows.py`` (the tables and what the SQL stores' triggers do),
``memory_worker.py`` (claims and fenced writes), ``memory_ops.py`` (settings, tokens, approval
links, bulk jobs, the audit log) and ``memory_hooks.py`` (webhooks).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence

from stepstone.errors import CannotSendEvent, InstanceAlreadyExists
from stepstone.model.events import EventType
from stepstone.model.statuses import TERMINAL, Status
from stepstone.storage.appended import AppendSignal
from stepstone.storage.base import (
    Conflict,
    EventRecord,
    InstanceQuery,
    InstanceRecord,
    InstanceSummary,
    NewEvent,
    NewInstance,
    SeparateLookAhead,
    Transition,
    VersionRecord,
    WorkflowChanged,
    WorkflowDefinition,
    WorkflowRecord,
    check_jurisdiction,
)
from stepstone.storage.memory_rows import (
    WAKEABLE,
    InstanceRow,
    Tables,
    WorkflowRow,
    own,
    page,
)
from stepstone.storage.memory_worker import MemoryWorker


class MemoryStorage(SeparateLookAhead, MemoryWorker):
    """``Storage`` in this process's memory; opening it anew starts empty."""

    push_wakes = True  # no other process can write to it

    def __init__(self, url: str) -> None:
        self.url = url
        self._tables: Tables | None = None
        self._init_signals()
        self.appended = AppendSignal(self._latest_event_ids)

    # --- lifecycle and listeners -----------------------------------------------------------

    async def open(self) -> None:
        if self._tables is None:
            self._tables = Tables()

    async def close(self) -> None:
        self.appended.stop()
        self._tables = None

    def sole_worker_lock(self) -> bool:
        return True  # no other process can see this store

    async def sync(self) -> None:
        self._require_open()

    # --- workflows and versions -------------------------------------------------------------

    async def register_workflow(
        self, account_id: str, name: str, definition: WorkflowDefinition, now: int
    ) -> WorkflowRecord:
        t = self._db
        version_id = str(uuid.uuid4())
        pk = t.workflow_names.get((account_id, name))
        if pk is None:
            pk = t.next_id("workflows")
            t.workflows[pk] = WorkflowRow(
                pk,
                account_id,
                name,
                str(uuid.uuid4()),
                version_id,
                now,
                now,
                concurrency_limit=definition.concurrency_limit,
                jurisdiction=definition.jurisdiction,
            )
            t.workflow_names[(account_id, name)] = pk
        else:
            w = t.workflows[pk]
            check_jurisdiction(w.jurisdiction, definition.jurisdiction)
            if w.jurisdiction is None:
                w.jurisdiction = definition.jurisdiction
            w.version_id, w.modified_on = version_id, now
            w.concurrency_limit = definition.concurrency_limit
        t.versions[version_id] = VersionRecord(
            version_id,
            pk,
            definition.class_name,
            definition.script_name,
            now,
            definition.limits_steps,
            definition.success_retention_ms,
            definition.error_retention_ms,
            tuple(definition.schedules),
            definition.language,
            definition.concurrency_limit,
        )
        return self._workflow(t.workflows[pk])

    def _workflow(self, w: WorkflowRow) -> WorkflowRecord:
        return WorkflowRecord(
            w.pk,
            w.account_id,
            w.name,
            w.id,
            w.created_on,
            w.modified_on,
            w.triggered_on,
            self._db.versions[w.version_id],
            w.jurisdiction,
            w.retention_fallback_ms,
        )

    async def get_workflow(self, account_id: str, name: str) -> WorkflowRecord | None:
        t = self._db
        pk = t.workflow_names.get((account_id, name))
        return None if pk is None else self._workflow(t.workflows[pk])

    async def list_workflows(
        self, account_id: str | None, search: str | None, offset: int, limit: int
    ) -> tuple[list[WorkflowRecord], int]:
        found = [
            w
            for w in self._db.workflows.values()
            if (account_id is None or w.account_id == account_id)
            and (not search or search in w.name)
        ]
        found.sort(key=lambda w: (w.name, w.pk))
        return [self._workflow(w) for w in page(found, offset, limit)], len(found)

    async def delete_workflow(self, account_id: str, name: str) -> bool:
        t = self._db
        pk = t.workflow_names.pop((account_id, name), None)
        if pk is None:
            return False
        gone = list(t.instance_ids.pop(pk, {}).values())
        t.delete_instances(gone)
        for version_id in [v.id for v in t.versions.values() if v.workflow_pk == pk]:
            del t.versions[version_id]
        # Its hooks go with it, as in the SQL stores (f467bce).
        for hook in [h for h in t.hooks.values() if h.workflow_pk == pk]:
            self._drop_hook(hook)
        del t.workflows[pk]
        self._after_write()
        self._fire_control([(i, None) for i in gone])
        return True

    async def list_versions(
        self, workflow_pk: int, offset: int, limit: int
    ) -> tuple[list[VersionRecord], int]:
        # Newest first; of two created at one time, the one added later first.
        found = [v for v in self._db.versions.values() if v.workflow_pk == workflow_pk]
        found.reverse()
        found.sort(key=lambda v: v.created_on, reverse=True)
        return page(found, offset, limit), len(found)

    async def get_version(self, workflow_pk: int, version_id: str) -> VersionRecord | None:
        v = self._db.versions.get(version_id)
        return v if v is not None and v.workflow_pk == workflow_pk else None

    async def count_instances(self, workflow_pk: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self._rows_of(workflow_pk):
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    # --- instances -------------------------------------------------------------------------

    async def create_instances(
        self,
        workflow_pk: int,
        version_id: str,
        items: Sequence[NewInstance],
        now: int,
        *,
        skip_existing: bool,
    ) -> list[InstanceRecord]:
        t = self._db
        workflow = t.workflows.get(workflow_pk)
        if workflow is None or workflow.version_id != version_id:
            raise WorkflowChanged(f"version {version_id!r} is not workflow {workflow_pk}'s own")
        ids = t.instance_ids.setdefault(workflow_pk, {})
        fresh: dict[str, NewInstance] = {}
        for item in items:
            if item.id in ids or item.id in fresh:
                if skip_existing:
                    continue
                raise InstanceAlreadyExists(f"Instance {item.id!r} already exists")
            fresh[item.id] = item
        created: list[InstanceRecord] = []
        for item in fresh.values():
            pk = t.next_id("instances")
            row = InstanceRow(
                pk,
                workflow_pk,
                item.id,
                version_id,
                Status.QUEUED,
                item.trigger_source,
                own(item.params),
                None if item.schedule is None else own(item.schedule),
                now,
                now,
                success_retention_ms=item.success_retention_ms,
                error_retention_ms=item.error_retention_ms,
            )
            t.instances[pk] = row
            ids[item.id] = pk
            t.schedule(row, now)
            data = item.queued_data(version_id)
            t.add_events(row, [NewEvent(EventType.WORKFLOW_QUEUED, now, data)])
            created.append(row.record())
            if item.lease_owner is not None:
                row.lease_owner, row.lease_expires = item.lease_owner, item.lease_expires
                row.epoch, row.status, row.started_on = 1, Status.RUNNING, now
        if created and workflow_pk in t.workflows:
            t.workflows[workflow_pk].triggered_on = now
        # Instances created claimed leave the workers nothing to look for.
        if any(item.lease_owner is None for item in fresh.values()):
            self._fire_wake()
        return created

    def _instance_row(self, workflow_pk: int, instance_id: str) -> InstanceRow | None:
        t = self._db
        pk = t.instance_ids.get(workflow_pk, {}).get(instance_id)
        return None if pk is None else t.instances[pk]

    async def get_instance(self, workflow_pk: int, instance_id: str) -> InstanceRecord | None:
        row = self._instance_row(workflow_pk, instance_id)
        return None if row is None else row.record()

    async def get_workflow_instance(
        self, account_id: str, workflow_name: str, instance_id: str
    ) -> tuple[WorkflowRecord, InstanceRecord | None] | None:
        workflow = await self.get_workflow(account_id, workflow_name)
        if workflow is None:
            return None
        return workflow, await self.get_instance(workflow.pk, instance_id)

    async def get_instance_summary(
        self, account_id: str, workflow_name: str, instance_id: str
    ) -> tuple[bool, tuple[InstanceRecord, InstanceSummary] | None]:
        workflow_pk = self._db.workflow_names.get((account_id, workflow_name))
        if workflow_pk is None:
            return False, None
        row = self._instance_row(workflow_pk, instance_id)
        if row is None:
            return True, None

        def lifecycle(kind: str, events: Iterable[EventRecord]) -> EventRecord | None:
            for e in events:
                if e.type == kind and e.step_kind is None and e.step_name is None:
                    return e
            return None

        queued = lifecycle(EventType.WORKFLOW_QUEUED, row.events)
        started = (
            None
            if row.started_on is not None
            else lifecycle(EventType.WORKFLOW_STARTED, row.events)
        )
        terminated = row.status == Status.TERMINATED and (
            lifecycle(EventType.WORKFLOW_TERMINATED, reversed(row.events)) is not None
        )
        summary = InstanceSummary(
            step_count=len(row.steps),
            queued_at=None if queued is None else queued.ts,
            started_at=None if started is None else started.ts,
            terminated=terminated,
        )
        return True, (row.record(), summary)

    async def load_step_events(
        self, instance_pk: int, step_name: str, kinds: Sequence[str]
    ) -> list[EventRecord]:
        row = self._db.instances.get(instance_pk)
        if row is None:
            return []
        return [e for e in row.events if e.step_name == step_name and e.step_kind in kinds]

    async def list_instances(self, workflow_pk: int, query: InstanceQuery) -> list[InstanceRecord]:
        q = query
        found = [
            row
            for row in self._rows_of(workflow_pk)
            if (q.status is None or row.status == q.status)
            and (q.created_from is None or row.created_on >= q.created_from)
            and (q.created_to is None or row.created_on <= q.created_to)
            and (
                q.after is None
                or (
                    (row.created_on, row.id) > q.after
                    if q.ascending
                    else (row.created_on, row.id) < q.after
                )
            )
        ]
        found.sort(key=lambda r: (r.created_on, r.id), reverse=not q.ascending)
        return [r.record() for r in page(found, q.offset, q.limit)]

    async def load_events(
        self, instance_pk: int, after_event_id: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        row = self._db.instances.get(instance_pk)
        if row is None:
            return []
        after = [e for e in row.events if e.event_id > after_event_id]
        return page(after, 0, limit)

    async def _latest_event_ids(self, pks: Sequence[int]) -> dict[int, int]:
        if self._tables is None:
            return {}
        instances = self._tables.instances
        return {
            pk: (instances[pk].events[-1].event_id if instances[pk].events else 0)
            for pk in pks
            if pk in instances
        }

    async def read_stream(
        self, instance_pk: int, step_name: str, chunks: int
    ) -> AsyncIterator[bytes]:
        for chunk_no in range(chunks):
            row = self._db.instances.get(instance_pk)
            data = None if row is None else row.streams.get(step_name, {}).get(chunk_no)
            if data is None:
                raise RuntimeError(f"stream chunk {chunk_no} of {step_name!r} is missing")
            yield data

    async def transition_instance(
        self, instance_pk: int, expected_status: str, transition: Transition, now: int
    ) -> None:
        t, tr = self._db, transition
        row = t.instances.get(instance_pk)
        if row is None or row.status != expected_status:
            raise Conflict(row.status if row else None)
        # Everything that may raise comes first, so that a failure writes nothing.
        expires_at = t.expiry(row, tr.status, now) if tr.ended else None
        closing: Sequence[NewEvent] = ()
        if tr.closing is not None:
            if tr.reset_history is True:
                log: list[EventRecord] = []
            elif tr.reset_history:
                dropped = set(tr.reset_history)
                log = [e for e in row.events if e.event_id not in dropped]
            else:
                log = list(row.events)
            closing = list(tr.closing(log))
        old = row.status
        self._apply_transition(row, tr, now, expires_at)
        t.status_changed(row, old)
        if tr.reset_history is True:
            t.drop_events(row, None)
        elif tr.reset_history:
            t.drop_events(row, tr.reset_history)
        if tr.reset_history and not tr.keep_pending:
            row.pending.clear()
        if tr.reset_streams is True:
            row.streams.clear()
        elif tr.reset_streams:
            for name in tr.reset_streams:
                row.streams.pop(name, None)
        t.add_events(row, [*closing, *tr.events])
        held = tr.release_worker and row.lease_owner is not None
        self._fire_wake()
        self._after_write()
        self.appended.fire(instance_pk)
        if held:
            self._fire_control([(instance_pk, row.epoch)])

    def _apply_transition(
        self, row: InstanceRow, tr: Transition, now: int, expires_at: int | None
    ) -> None:
        row.status, row.modified_on = tr.status, now
        if tr.runnable:
            self._db.schedule(row, now if tr.runnable_at is None else tr.runnable_at)
            row.priority = tr.priority
            row.wake_seq += 1
        elif tr.status in TERMINAL or tr.status == Status.PAUSED:
            self._db.schedule(row, None)
        if tr.release_worker:
            # The lease stays until its holder stops (release_stopped) or it expires.
            row.epoch += 1
        if tr.ended:
            row.ended_on, row.expires_at = now, expires_at
        if tr.paused_at is not None:
            row.paused_at = tr.paused_at
        if tr.clear_paused_at:
            row.paused_at = None
        row.control = tr.control
        if tr.error is not None:
            row.error = own(tr.error)
        if tr.clear_outcome:
            row.output = row.error = row.rollback = None
            row.ended_on = row.started_on = row.expires_at = None

    async def delete_instances(self, workflow_pk: int, instance_ids: Sequence[str]) -> list[str]:
        t = self._db
        ids = t.instance_ids.get(workflow_pk, {})
        found = {i: ids[i] for i in dict.fromkeys(instance_ids) if i in ids}
        t.delete_instances(found.values())
        self._after_write()
        self._fire_control([(pk, None) for pk in found.values()])
        return list(found)

    async def deliver_event(
        self, instance_pk: int, event_type: str, payload: bytes, now: int
    ) -> bool:
        t = self._db
        row = t.instances.get(instance_pk)
        if row is None:
            return False
        if row.status in TERMINAL:
            raise CannotSendEvent(f"Cannot send an event to an instance that is {row.status}")
        row.pending.append((t.next_id("pending_events"), event_type, own(payload), now))
        # Paused and queued instances keep their schedule; the event waits in the buffer.
        row.wake_seq += 1
        if row.status in WAKEABLE:
            t.schedule(row, now)
        if row.status == Status.WAITING:
            row.priority = 0
        self._fire_wake()
        return True

    # --- retention -------------------------------------------------------------------------

    async def delete_expired(self, now: int, limit: int) -> int:
        t = self._db
        due = sorted(
            (r.expires_at, r.pk)
            for r in t.instances.values()
            if r.expires_at is not None and r.expires_at <= now
        )
        pks = [pk for _, pk in page(due, 0, limit)]
        t.delete_instances(pks)
        self._after_write()
        return len(pks)
