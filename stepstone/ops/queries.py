"""The reads every front-end makes, with the checks and errors they share: a workflow or an
instance by name, pages of instances, histories, one step's events, counts, streams.

What these reads show of instances is durable. A SQLite store lets its other connections see a
commit while its fdatasync is still under way (early lock release): a read answers only after
that sync (``Storage.sync``), so no client is shown a step's result or an instance's end that a
power cut could still take back. Nothing waits when no sync is under way, or on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TypeVar

from stepstone import auth as tokens
from stepstone import signed
from stepstone.engine.clock import Clock, SystemClock
from stepstone.errors import (
    InstanceNotFound,
    InvalidInstanceId,
    WorkflowNotFound,
)
from stepstone.model import history as h
from stepstone.model.ops_records import (
    AuditEntry,
    AuditQuery,
    BulkItem,
    BulkJobRecord,
    InstanceFilter,
)
from stepstone.model.records import TokenRecord
from stepstone.ops.inputs import check_workflow_name
from stepstone.storage.appended import Watch
from stepstone.storage.base import (
    EventRecord,
    InstanceLinks,
    InstanceQuery,
    InstanceRecord,
    InstanceSummary,
    Storage,
    VersionRecord,
    WorkflowRecord,
)
from stepstone.storage.outage import StoreHealth, health_of
from stepstone.validation import (
    addressable_id_problem,
)

T = TypeVar("T")


class Queries:
    """The reads of ``Operations``; a front-end reads through these, never the store itself."""

    def __init__(self, storage: Storage, *, clock: Clock | None = None) -> None:
        self.storage = storage
        self.clock = clock or SystemClock()

    def now(self) -> int:
        return self.clock.now_ms()

    async def _durable(self, read: Awaitable[T]) -> T:
        """``read``'s answer, once everything it may have seen is durable."""
        value = await read
        await self.storage.sync()
        return value

    # --- workflows --------------------------------------------------------------------------

    async def workflow(self, account_id: str, name: str) -> WorkflowRecord:
        check_workflow_name(name)
        record = await self.storage.get_workflow(account_id, name)
        if record is None:
            raise WorkflowNotFound(f"Workflow {name!r} not found")
        return record

    async def instance(
        self, account_id: str, workflow_name: str, instance_id: str
    ) -> tuple[WorkflowRecord, InstanceRecord]:
        """The workflow and its instance, in one read; a missing workflow is reported before
        an instance id's problem, and that before a missing instance."""
        check_workflow_name(workflow_name)
        problem = addressable_id_problem(instance_id)
        if problem:
            await self.workflow(account_id, workflow_name)
            raise InvalidInstanceId(f"invalid instance id {instance_id!r}: {problem}")
        read = self.storage.get_workflow_instance(account_id, workflow_name, instance_id)
        found = await self._durable(read)
        if found is None:
            raise WorkflowNotFound(f"Workflow {workflow_name!r} not found")
        workflow, record = found
        if record is None:
            raise InstanceNotFound(f"Instance {instance_id!r} not found")
        return workflow, record

    async def instance_page(
        self, workflow_pk: int, query: InstanceQuery
    ) -> tuple[list[InstanceRecord], bool]:
        """One page of a workflow's instances, and whether more follow (one extra row says)."""
        rows = await self._durable(
            self.storage.list_instances(workflow_pk, replace(query, limit=query.limit + 1))
        )
        return rows[: query.limit], len(rows) > query.limit

    async def history(self, instance: InstanceRecord) -> h.InstanceHistory:
        return h.fold(await self._durable(self.storage.load_events(instance.pk)))

    async def instance_summary(
        self, account_id: str, workflow_name: str, instance_id: str
    ) -> tuple[InstanceRecord, InstanceSummary]:
        """The instance and what its status answer needs, at a cost the history's length
        does not change (``ops.instance``'s checks and errors), in one read."""
        check_workflow_name(workflow_name)
        if addressable_id_problem(instance_id):
            # Raises what ``instance`` does: a missing workflow before the id's problem.
            await self.instance(account_id, workflow_name, instance_id)
        read = self.storage.get_instance_summary(account_id, workflow_name, instance_id)
        exists, found = await self._durable(read)
        if not exists:
            raise WorkflowNotFound(f"Workflow {workflow_name!r} not found")
        if found is None:
            raise InstanceNotFound(f"Instance {instance_id!r} not found")
        return found

    async def step_history(self, instance: InstanceRecord, name: str) -> h.InstanceHistory:
        """The history folded from the events of the steps called ``name`` only (a step, a
        wait and a sleep may share a name): enough to answer for one step, or to say it is of
        another kind, without reading the rest. Instance-level facts are not in it."""
        kinds = (h.DO, h.WAIT, h.SLEEP)
        return h.fold(await self._durable(self.storage.load_step_events(instance.pk, name, kinds)))

    # --- what answers and pages show beside a record ---------------------------------------

    async def workflows(
        self, account_id: str | None, search: str | None, offset: int, limit: int
    ) -> tuple[list[WorkflowRecord], int]:
        """A page of workflows (all accounts for None), and how many match in all."""
        return await self.storage.list_workflows(account_id, search, offset, limit)

    async def versions(
        self, workflow_pk: int, offset: int, limit: int
    ) -> tuple[list[VersionRecord], int]:
        return await self.storage.list_versions(workflow_pk, offset, limit)

    async def version(self, workflow_pk: int, version_id: str) -> VersionRecord | None:
        return await self.storage.get_version(workflow_pk, version_id)

    async def instance_counts(self, workflow_pk: int) -> dict[str, int]:
        """Instances of the workflow per status."""
        return await self._durable(self.storage.count_instances(workflow_pk))

    async def concurrency_usage(self, workflow_pk: int) -> tuple[int, int]:
        """``(running, queued)`` as the workflow's concurrency limit sees them now."""
        return await self.storage.concurrency_usage(workflow_pk, self.now())

    async def instances(self, workflow_pk: int, query: InstanceQuery) -> list[InstanceRecord]:
        return await self._durable(self.storage.list_instances(workflow_pk, query))

    async def find_instance(self, workflow_pk: int, instance_id: str) -> InstanceRecord | None:
        """The instance, or None once it is gone (no error: a watcher asks whether it is)."""
        return await self._durable(self.storage.get_instance(workflow_pk, instance_id))

    async def events(
        self, instance: InstanceRecord, after_event_id: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        return await self._durable(self.storage.load_events(instance.pk, after_event_id, limit))

    async def links(self, instance: InstanceRecord) -> InstanceLinks:
        """The instance's parent and children (step.run_workflow)."""
        return await self._durable(self.storage.instance_links(instance.pk))

    def stream(self, instance_pk: int, step_name: str, chunks: int) -> AsyncIterator[bytes]:
        """A byte-stream step's output, chunk by chunk."""
        return self.storage.read_stream(instance_pk, step_name, chunks)

    async def account_settings(self, account_id: str) -> tuple[int | None, int | None]:
        """The account's ``(success, error)`` retentions in ms, None where unset."""
        return await self.storage.get_account_settings(account_id)

    # --- the operator tools' records (extensions) --------------------------------------------

    async def bulk_jobs(
        self, account_id: str, workflow_name: str | None, limit: int
    ) -> list[BulkJobRecord]:
        return await self.storage.list_bulk_jobs(account_id, workflow_name, limit)

    async def bulk_items(
        self, job_id: str, outcome: str | None, after: str | None, limit: int
    ) -> list[BulkItem]:
        return await self.storage.list_bulk_items(job_id, outcome, after, limit)

    async def audit(self, query: AuditQuery) -> list[AuditEntry]:
        return await self.storage.list_audit(query)

    async def count_selected(self, workflow_pk: int, where: InstanceFilter) -> int:
        """How many instances a bulk action with this filter would select."""
        return await self.storage.count_selected(workflow_pk, where)

    # --- what the web layer reads before routing: credentials, signing keys, the store's health
    # The awaitables are handed back as they are: the Guard awaits one per request, and a
    # coroutine of this method's own around each would cost that request another frame.

    def token(self, secret: str) -> Awaitable[TokenRecord | None]:
        """The live token with this secret, or None (a verification is reused for a moment:
        ``stepstone.auth.verify_recent``)."""
        return tokens.verify_recent(self.storage, secret)

    def signing_key(self, name: str) -> Awaitable[bytes]:
        """The store's key named ``name`` for ``stepstone.signed``, made on first use."""
        return signed.key(self.storage, name)

    @property
    def store_health(self) -> StoreHealth | None:
        """The store's account of an outage under way, for stores that keep one."""
        return health_of(self.storage)

    async def probe_store(self) -> None:
        """One indexed read: proves the store answers, changes nothing."""
        await self.storage.get_account_settings("")

    def watch_appends(self, instance_pk: int) -> AbstractContextManager[Watch]:
        """A watch woken when the instance's event log grows (storage/appended.py)."""
        return self.storage.appended.watching(instance_pk)
