"""The tables of the in-memory store (``storage/memory.py``): plain Python rows in dicts.

Each table is a dict keyed as the SQL schema keys it, and each row a mutable dataclass with the
columns the SQL stores keep; the records the contract hands out (``InstanceRecord``,
``EventRecord`` ...) are frozen and built afresh per read. What the SQL stores do in triggers
(the step count, waking a parent when its child ends, the webhook outbox) is done here by
``Tables.status_changed`` and ``Tables.add_events`` / ``drop_events``, called by every write
that changes a status or a history.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from stepstone.model.ops_records import AuditEntry, BulkJobRecord
from stepstone.model.retention import DEFAULT_RETENTION_MS
from stepstone.model.statuses import TERMINAL, Status
from stepstone.model.webhooks import PENDING
from stepstone.storage.base import EventRecord, InstanceRecord, NewEvent, VersionRecord

T = TypeVar("T")
# Statuses in which a delivered event (or a child's end) makes the instance runnable now.
WAKEABLE = (Status.WAITING, Status.RUNNING, Status.WAITING_FOR_PAUSE, Status.ROLLING_BACK)
# Status changes the webhook outbox records (the SQL stores' outbox trigger).
NOTIFIED = (Status.ERRORED, Status.COMPLETE, Status.TERMINATED, Status.PAUSED)


@dataclass(slots=True)
class WorkflowRow:
    pk: int
    account_id: str
    name: str
    id: str
    version_id: str
    created_on: int
    modified_on: int
    triggered_on: int | None = None
    concurrency_limit: int | None = None
    jurisdiction: str | None = None
    retention_fallback_ms: int | None = None


@dataclass(slots=True)
class InstanceRow:
    pk: int
    workflow_pk: int
    id: str
    version_id: str
    status: str
    trigger_source: str
    params: bytes
    schedule: bytes | None
    created_on: int
    modified_on: int
    started_on: int | None = None
    ended_on: int | None = None
    output: bytes | None = None
    error: bytes | None = None
    rollback: bytes | None = None
    control: str | None = None
    paused_at: int | None = None
    success_retention_ms: int | None = None
    error_retention_ms: int | None = None
    # Scheduling: a row with runnable_at <= now and no live lease is claimable.
    runnable_at: int | None = None
    priority: int = 1
    lease_owner: str | None = None
    lease_expires: int | None = None
    epoch: int = 0
    wake_seq: int = 0
    expires_at: int | None = None
    # The history, oldest first (event ids only grow, so this is event id order).
    events: list[EventRecord] = field(default_factory=list)
    # Events per (step kind, step name): the step count is how many groups there are.
    steps: dict[tuple[str, str], int] = field(default_factory=dict)
    # Buffered events: (seq, type, payload, ts), oldest first.
    pending: list[tuple[int, str, bytes, int]] = field(default_factory=list)
    # Byte-stream outputs: step name -> chunk number -> bytes.
    streams: dict[str, dict[int, bytes]] = field(default_factory=dict)

    def record(self) -> InstanceRecord:
        return InstanceRecord(
            self.pk,
            self.workflow_pk,
            self.id,
            self.version_id,
            self.status,
            self.trigger_source,
            self.params,
            self.schedule,
            self.created_on,
            self.modified_on,
            self.started_on,
            self.ended_on,
            self.output,
            self.error,
            self.rollback,
            self.control,
            self.paused_at,
            self.success_retention_ms,
            self.error_retention_ms,
        )

    def live_lease(self, now: int | None) -> bool:
        """Leased, and (when ``now`` is given) not expired at ``now``."""
        if self.lease_owner is None:
            return False
        return now is None or (self.lease_expires is not None and self.lease_expires >= now)

    def claimable(self, now: int) -> bool:
        return (
            self.runnable_at is not None
            and self.runnable_at <= now
            and (self.lease_expires is None or self.lease_expires < now)
        )


@dataclass(slots=True)
class ChildLink:
    parent_pk: int
    detached: bool


@dataclass(slots=True)
class ApprovalRow:
    id: str
    instance_pk: int
    event_type: str
    expires_at: int
    created_on: int
    title: str | None
    used_on: int | None = None


@dataclass(slots=True)
class TokenRow:
    id: str
    name: str
    token_hash: str
    permissions: tuple[str, ...]
    accounts: tuple[str, ...] | None
    created_on: int
    revoked_on: int | None = None


@dataclass(slots=True)
class HookRow:
    pk: int
    workflow_pk: int
    id: str
    url: str
    events: tuple[str, ...]
    secret: str
    wait_threshold_ms: int | None
    source: str
    created_on: int


@dataclass(slots=True)
class DeliveryRow:
    pk: int
    hook_pk: int
    instance_pk: int
    # Kept by value: an operator may delete the instance before its news is out.
    workflow_name: str
    instance_id: str
    event: str
    error: bytes | None
    at: int
    state: str
    next_attempt_at: int
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires: int | None = None
    last_error: str | None = None
    delivered_on: int | None = None
    # (started_on, duration_ms, status_code, error), oldest first.
    log: list[tuple[int, int, int | None, str | None]] = field(default_factory=list)


def own(data: bytes) -> bytes:
    """A copy of ``data`` sized to it, to keep: a bytes object from ``orjson.dumps`` holds an
    allocation of about 4 KiB however short it is (tracemalloc: 41 MB for 10,000 small
    payloads, 1.2 MB once copied), which a store keeping every payload in memory multiplies."""
    return bytes(memoryview(data))


def page(items: Sequence[T], offset: int, limit: int | None) -> list[T]:
    """``items[offset:offset + limit]`` as SQL's LIMIT/OFFSET (a negative limit: no limit)."""
    start = max(offset, 0)
    if limit is None or limit < 0:
        return list(items[start:])
    return list(items[start : start + limit])


class Tables:
    """Every table of one in-memory database, and the row-level rules its triggers hold."""

    def __init__(self) -> None:
        # One sequence per table, from 1, as the SQL stores' keys (never reused).
        self._sequences: dict[str, itertools.count[int]] = {}
        self.workflows: dict[int, WorkflowRow] = {}
        self.workflow_names: dict[tuple[str, str], int] = {}
        # In insertion order, which breaks ties of created_on (SQLite's rowid).
        self.versions: dict[str, VersionRecord] = {}
        self.instances: dict[int, InstanceRow] = {}
        # workflow pk -> instance id -> pk.
        self.instance_ids: dict[int, dict[str, int]] = {}
        # Rows whose runnable_at is set: what claims and next_wake_at look through.
        self.scheduled: set[int] = set()
        self.child_links: dict[int, ChildLink] = {}
        self.signing_keys: dict[str, bytes] = {}
        self.approval_links: dict[str, ApprovalRow] = {}
        self.account_settings: dict[str, tuple[int | None, int | None]] = {}
        self.tokens: dict[str, TokenRow] = {}
        self.token_hashes: dict[str, str] = {}
        self.hooks: dict[int, HookRow] = {}
        self.hook_ids: dict[str, int] = {}
        self.deliveries: dict[int, DeliveryRow] = {}
        self.delivery_keys: set[tuple[int, int, str, int]] = set()
        self.bulk_jobs: dict[str, BulkJobRecord] = {}
        # job id -> instance id -> (outcome, reason).
        self.bulk_items: dict[str, dict[str, tuple[str, str | None]]] = {}
        self.audit: list[AuditEntry] = []  # in seq order
        # Set by a write that woke a parent (its child ended): the store wakes the workers.
        self.parent_woken = False

    def next_id(self, table: str) -> int:
        sequence = self._sequences.get(table)
        if sequence is None:
            sequence = self._sequences[table] = itertools.count(1)
        return next(sequence)

    # --- scheduling -----------------------------------------------------------------------

    def schedule(self, row: InstanceRow, runnable_at: int | None) -> None:
        row.runnable_at = runnable_at
        if runnable_at is None:
            self.scheduled.discard(row.pk)
        else:
            self.scheduled.add(row.pk)

    def scheduled_rows(self, scope: Sequence[int] | None) -> list[InstanceRow]:
        wanted = None if scope is None else set(scope)
        rows = (self.instances[pk] for pk in self.scheduled)
        return [r for r in rows if wanted is None or r.workflow_pk in wanted]

    def caps(self, scope: Sequence[int] | None) -> dict[int, int]:
        """The capped workflows among ``scope`` (all when None): pk -> limit."""
        wanted = None if scope is None else set(scope)
        return {
            w.pk: w.concurrency_limit
            for w in self.workflows.values()
            if w.concurrency_limit is not None and (wanted is None or w.pk in wanted)
        }

    def running(self, workflow_pk: int | None, now: int | None) -> int:
        """Live leases of one workflow (all workflows when None; every lease when ``now`` is
        None)."""
        pks: Iterable[int] = (
            self.instances
            if workflow_pk is None
            else self.instance_ids.get(workflow_pk, {}).values()
        )
        return sum(1 for pk in pks if self.instances[pk].live_lease(now))

    # --- histories ------------------------------------------------------------------------

    def add_events(self, row: InstanceRow, events: Iterable[NewEvent]) -> None:
        for e in events:
            data = None if e.data is None else own(e.data)
            record = EventRecord(
                self.next_id("instance_events"), e.ts, e.type, e.step_kind, e.step_name, data
            )
            row.events.append(record)
            if e.step_kind is not None and e.step_name is not None:
                key = (e.step_kind, e.step_name)
                row.steps[key] = row.steps.get(key, 0) + 1

    def drop_events(self, row: InstanceRow, event_ids: Iterable[int] | None) -> None:
        """Delete the listed events (all when None), keeping the step count true."""
        if event_ids is None:
            row.events.clear()
            row.steps.clear()
            return
        gone = set(event_ids)
        kept: list[EventRecord] = []
        for e in row.events:
            if e.event_id not in gone:
                kept.append(e)
            elif e.step_kind is not None and e.step_name is not None:
                key = (e.step_kind, e.step_name)
                row.steps[key] -= 1
                if row.steps[key] == 0:
                    del row.steps[key]
        row.events[:] = kept

    # --- instances ------------------------------------------------------------------------

    def expiry(self, row: InstanceRow, status: str, now: int) -> int:
        """When a finished instance expires: instance, version, account, workflow fallback,
        default."""
        version = self.versions[row.version_id]
        workflow = self.workflows[row.workflow_pk]
        settings = self.account_settings.get(workflow.account_id, (None, None))
        if status == Status.COMPLETE:
            chain = (row.success_retention_ms, version.success_retention_ms, settings[0])
        else:
            chain = (row.error_retention_ms, version.error_retention_ms, settings[1])
        for ms in (*chain, workflow.retention_fallback_ms):
            if ms is not None:
                return now + ms
        return now + DEFAULT_RETENTION_MS

    def delete_instances(self, pks: Iterable[int]) -> None:
        """Delete instances with their events, buffered events, streams, child links and
        approval links; a parent (not itself deleted) waiting on a deleted child is made
        runnable, as the child's end would make it. Deliveries stay: they keep what they say
        by value."""
        deleted = {pk for pk in pks if pk in self.instances}
        parents: set[int] = set()
        for pk in deleted:
            link = self.child_links.get(pk)
            if (
                link is not None
                and not link.detached
                and self.instances[pk].status not in TERMINAL
                and link.parent_pk not in deleted
            ):
                parents.add(link.parent_pk)
        for child_pk, link in list(self.child_links.items()):
            if child_pk in deleted or link.parent_pk in deleted:
                del self.child_links[child_pk]
        for link_id, approval in list(self.approval_links.items()):
            if approval.instance_pk in deleted:
                del self.approval_links[link_id]
        for pk in sorted(parents):
            parent = self.instances.get(pk)
            if parent is None:
                continue
            parent.wake_seq += 1
            if parent.status in WAKEABLE:
                # Since its last change: a time in the past on whichever clock the engine runs.
                due = parent.modified_on
                self.schedule(
                    parent, due if parent.runnable_at is None else min(parent.runnable_at, due)
                )
            if parent.status == Status.WAITING:
                parent.priority = 0
        if parents:
            self.parent_woken = True
        for pk in deleted:
            row = self.instances.pop(pk)
            self.scheduled.discard(pk)
            ids = self.instance_ids.get(row.workflow_pk)
            if ids is not None:
                ids.pop(row.id, None)

    def status_changed(self, row: InstanceRow, old: str) -> None:
        """What the SQL stores' triggers do after an update of ``row``'s status from ``old``:
        a child's end makes its parent runnable; a notified change fills the outbox."""
        new = row.status
        if new in TERMINAL and old not in TERMINAL:
            link = self.child_links.get(row.pk)
            if link is not None:
                parent = self.instances.get(link.parent_pk)
                if parent is not None:
                    parent.wake_seq += 1
                    if parent.status in WAKEABLE:
                        self.schedule(parent, row.modified_on)
                    if parent.status == Status.WAITING:
                        parent.priority = 0
                self.parent_woken = True
        if new != old and new in NOTIFIED:
            names = [new]
            if old == Status.ROLLING_BACK and new in TERMINAL:
                names.append("rolledBack")
            self._outbox(row, names)

    def _outbox(self, row: InstanceRow, names: Sequence[str]) -> None:
        workflow = self.workflows.get(row.workflow_pk)
        if workflow is None:
            return
        # The change's own notice first, then rolledBack; each to the hooks in pk order (pks
        # only grow), as the SQL stores' outbox triggers insert them.
        for name in names:
            for hook in self.hooks.values():
                if hook.workflow_pk == row.workflow_pk and name in hook.events:
                    self.add_delivery(
                        hook, row.pk, workflow.name, row.id, name, row.error, row.modified_on
                    )

    def add_delivery(
        self,
        hook: HookRow,
        instance_pk: int,
        workflow_name: str,
        instance_id: str,
        event: str,
        error: bytes | None,
        at: int,
        due: int | None = None,
    ) -> bool:
        """Queue a delivery unless one of this hook, instance, event and time exists."""
        key = (hook.pk, instance_pk, event, at)
        if key in self.delivery_keys:
            return False
        self.delivery_keys.add(key)
        pk = self.next_id("webhook_deliveries")
        self.deliveries[pk] = DeliveryRow(
            pk,
            hook.pk,
            instance_pk,
            workflow_name,
            instance_id,
            event,
            error,
            at,
            PENDING,
            at if due is None else due,
        )
        return True

    def drop_deliveries(self, hook_pk: int) -> None:
        for pk in [pk for pk, d in self.deliveries.items() if d.hook_pk == hook_pk]:
            d = self.deliveries.pop(pk)
            self.delivery_keys.discard((d.hook_pk, d.instance_pk, d.event, d.at))
