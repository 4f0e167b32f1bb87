"""Registering workflows and creating instances: the commands that add, with their checks
(identifiers, limits, payloads, importable classes) and createBatch's per-entry outcomes."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson

from stepstone.engine.clock import Clock
from stepstone.errors import (
    DuplicateInBatch,
    InstanceAlreadyExists,
    InvalidInstanceId,
    InvalidRequest,
    InvalidWorkflowDefinition,
    StepstoneError,
    WorkflowNotFound,
)
from stepstone.loader import WorkflowLoadError, load_class
from stepstone.model.events import EventType
from stepstone.model.statuses import Status
from stepstone.observability import metrics
from stepstone.observability.tracing import stamp
from stepstone.ops.inputs import (
    MAX_BATCH,
    MAX_CONCURRENCY_LIMIT,
    MAX_STEPS_LIMIT,
    RESERVED_BATCH_IDS,
    BatchError,
    CreateRequest,
    check_payload_size,
    check_workflow_name,
    retention_ms,
    validate_schedules,
)
from stepstone.ops.queries import Queries
from stepstone.storage.base import (
    JURISDICTIONS,
    Claim,
    EventRecord,
    InstanceRecord,
    NewInstance,
    Storage,
    WorkflowChanged,
    WorkflowDefinition,
    WorkflowRecord,
)
from stepstone.validation import (
    addressable_id_problem,
    instance_id_problem,
)

# A create whose workflow changed under it looks again and tries again; a third change in a
# row is a registration loop, not a race, and fails.
_CREATE_TRIES = 3


class LocalRunner(Protocol):
    """The worker of the process that creates an instance (``engine.worker.Worker``), which
    may take it at once: created claimed, it runs without waiting for a claim."""

    def reserve_slot(self, workflow_pk: int) -> tuple[str, int] | None: ...

    def run_created(self, claim: Claim | None) -> None: ...


class Creates(Queries):
    """Workflows registered and deleted, instances created; ``Operations`` adds the rest."""

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Clock | None = None,
        check_importable: bool = True,
        on_workflows_changed: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(storage, clock=clock)
        self.check_importable = check_importable
        self.on_workflows_changed = on_workflows_changed
        self.runner: LocalRunner | None = None
        # Workflow name -> why this process's worker cannot import its class: creating an
        # instance that no worker here can run is refused (10202) rather than left queued.
        self.unloadable: dict[str, str] = {}
        # The workflows creates were last made for: a create names the version it looked up
        # and the store checks it is still current (``WorkflowChanged``), so a lookup is paid
        # once, not per create (one round trip on PostgreSQL).
        self._create_targets: dict[tuple[str, str], WorkflowRecord] = {}

    async def put_workflow(
        self,
        account_id: str,
        name: str,
        *,
        class_name: str,
        script_name: str,
        limits_steps: int | None = None,
        success_retention: Any = None,
        error_retention: Any = None,
        schedules: Sequence[str] = (),
        concurrency_limit: int | None = None,
        jurisdiction: str | None = None,
    ) -> WorkflowRecord:
        check_workflow_name(name)
        if jurisdiction is not None and jurisdiction not in JURISDICTIONS:
            raise InvalidWorkflowDefinition(
                f"jurisdiction must be one of {', '.join(JURISDICTIONS)}; got {jurisdiction!r}"
            )
        for field, value in (("class_name", class_name), ("script_name", script_name)):
            if not isinstance(value, str) or not 1 <= len(value) <= 255:
                raise InvalidWorkflowDefinition(f"{field} must be a string of 1 to 255 characters")
        if limits_steps is not None and (
            isinstance(limits_steps, bool)
            or not isinstance(limits_steps, int)
            or not 1 <= limits_steps <= MAX_STEPS_LIMIT
        ):
            raise InvalidWorkflowDefinition(f"limits.steps must be from 1 to {MAX_STEPS_LIMIT}")
        if concurrency_limit is not None and (
            isinstance(concurrency_limit, bool)
            or not isinstance(concurrency_limit, int)
            or not 1 <= concurrency_limit <= MAX_CONCURRENCY_LIMIT
        ):
            raise InvalidWorkflowDefinition(
                f"concurrency.limit must be an integer from 1 to {MAX_CONCURRENCY_LIMIT}"
            )
        definition = WorkflowDefinition(
            class_name=class_name,
            script_name=script_name,
            limits_steps=limits_steps,
            success_retention_ms=retention_ms(success_retention, "success_retention"),
            error_retention_ms=retention_ms(error_retention, "error_retention"),
            schedules=validate_schedules(schedules),
            concurrency_limit=concurrency_limit,
            jurisdiction=jurisdiction,
        )
        if self.check_importable:
            try:
                load_class(script_name, class_name)
            except WorkflowLoadError as exc:
                raise InvalidWorkflowDefinition(str(exc)) from None
        record = await self.storage.register_workflow(account_id, name, definition, self.now())
        self._create_targets[(account_id, name)] = record
        if self.on_workflows_changed is not None:
            self.on_workflows_changed()
        return record

    async def delete_workflow(self, account_id: str, name: str) -> None:
        check_workflow_name(name)
        self._create_targets.pop((account_id, name), None)
        if not await self.storage.delete_workflow(account_id, name):
            raise WorkflowNotFound(f"Workflow {name!r} not found")
        if self.on_workflows_changed is not None:
            self.on_workflows_changed()

    async def set_account_settings(
        self, account_id: str, success_ms: int | None, error_ms: int | None
    ) -> None:
        """The account's default ``(success, error)`` retentions in ms, None for unset."""
        await self.storage.put_account_settings(account_id, success_ms, error_ms)

    # --- instances --------------------------------------------------------------------------

    async def create_instances(
        self,
        account_id: str,
        workflow_name: str,
        requests: Sequence[CreateRequest],
        *,
        skip_existing: bool,
        trigger_source: str = "api",
    ) -> tuple[WorkflowRecord, list[InstanceRecord]]:
        """Create instances of the workflow's current version; see ``Storage.create_instances``."""
        workflow = await self._create_target(account_id, workflow_name)
        problem = self.unloadable.get(workflow_name)
        if problem is not None and trigger_source != "cron":
            raise InvalidWorkflowDefinition(f"workflow {workflow_name!r} cannot run: {problem}")
        items = []
        for request in requests:
            instance_id = request.id if request.id is not None else str(uuid.uuid4())
            if trigger_source == "cron":
                problem = addressable_id_problem(instance_id)
            else:
                problem = instance_id_problem(instance_id)
            if problem:
                raise InvalidInstanceId(f"invalid instance id {instance_id!r}: {problem}")
            check_payload_size(request.params)
            items.append(
                NewInstance(
                    id=instance_id,
                    params=request.params,
                    trigger_source=trigger_source,
                    schedule=None if request.schedule is None else orjson.dumps(request.schedule),
                    success_retention_ms=request.success_retention_ms,
                    error_retention_ms=request.error_retention_ms,
                )
            )
        created = None
        if self.runner is not None and len(items) == 1 and not skip_existing:
            created = await self._create_claimed(account_id, workflow, items[0], self.runner)
        if created is None:
            created = await self._create(
                account_id, workflow, stamp(items), skip_existing=skip_existing
            )
        workflow, records = created
        metrics.INSTANCES_CREATED.labels(workflow.name).inc(len(records))
        return workflow, records

    async def _create_claimed(
        self, account_id: str, workflow: WorkflowRecord, item: NewInstance, runner: LocalRunner
    ) -> tuple[WorkflowRecord, list[InstanceRecord]] | None:
        """Create ``item`` claimed by the local worker and hand it over; None if it has no slot."""
        lease = runner.reserve_slot(workflow.pk)
        if lease is None:
            return None
        owner, expires = lease
        (item,) = stamp([dataclasses.replace(item, lease_owner=owner, lease_expires=expires)])
        try:
            created = await self._create(account_id, workflow, [item], skip_existing=False)
        except BaseException:
            # Failed, or cancelled (an outage's prompt 503) perhaps after its commit: then the
            # instance starts once its lease expires, as after a crash.
            runner.run_created(None)
            raise
        record = created[1][0]
        # A workflow deleted and registered anew meanwhile is one the worker does not know
        # yet: its instance waits for the lease to expire, then for any worker's claim.
        known = record.workflow_pk == workflow.pk
        runner.run_created(_claimed(record, item, owner) if known else None)
        return created

    async def _create_target(self, account_id: str, name: str) -> WorkflowRecord:
        check_workflow_name(name)
        workflow = self._create_targets.get((account_id, name))
        if workflow is None:
            workflow = self._create_targets[(account_id, name)] = await self.workflow(
                account_id, name
            )
        return workflow

    async def _create(
        self,
        account_id: str,
        workflow: WorkflowRecord,
        items: Sequence[NewInstance],
        *,
        skip_existing: bool,
    ) -> tuple[WorkflowRecord, list[InstanceRecord]]:
        """Create ``items`` as ``workflow``'s version, or as the current one if it changed."""
        for tries_left in reversed(range(_CREATE_TRIES)):
            try:
                records = await self.storage.create_instances(
                    workflow.pk, workflow.version.id, items, self.now(),
                    skip_existing=skip_existing,
                )  # fmt: skip
                return workflow, records
            except WorkflowChanged:
                if not tries_left:
                    raise
                # Registered again (or deleted) since it was looked up, here or elsewhere; a
                # create beside this one may have dropped it already.
                self._create_targets.pop((account_id, workflow.name), None)
                workflow = await self._create_target(account_id, workflow.name)
        raise AssertionError("unreachable")  # pragma: no cover

    async def create_batch(
        self,
        account_id: str,
        workflow_name: str,
        entries: Sequence[CreateRequest | tuple[str | None, StepstoneError]],
        *,
        trigger_source: str = "api",
    ) -> tuple[WorkflowRecord, list[InstanceRecord], list[BatchError]]:
        """createBatch's object form: each entry is created or reported, never skipped.

        An entry the front-end could not parse arrives as ``(its id, its error)``. Invalid
        and reserved ids are 10401, an id repeated in the batch 10415 (its first occurrence is
        created), an id that exists already 10405. What can be created is written in one
        transaction, each instance with its own row and event, so one bad entry never stops
        the others.
        """
        if not 1 <= len(entries) <= MAX_BATCH:
            raise InvalidRequest(f"a batch has 1 to {MAX_BATCH} instances; got {len(entries)}")
        workflow = await self._create_target(account_id, workflow_name)
        problem = self.unloadable.get(workflow_name)
        if problem is not None:
            raise InvalidWorkflowDefinition(f"workflow {workflow_name!r} cannot run: {problem}")
        errors: list[BatchError] = []
        items: list[tuple[int, NewInstance]] = []
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            if isinstance(entry, tuple):
                errors.append(BatchError.of(index, *entry))
                continue
            instance_id = entry.id if entry.id is not None else str(uuid.uuid4())
            problem = instance_id_problem(instance_id)
            if problem is None and instance_id in RESERVED_BATCH_IDS:
                problem = f"{instance_id!r} is reserved: it names an instances route"
            if problem:
                bad = InvalidInstanceId(f"invalid instance id {instance_id!r}: {problem}")
                errors.append(BatchError.of(index, instance_id, bad))
                continue
            if instance_id in seen:
                errors.append(BatchError.of(index, instance_id, DuplicateInBatch()))
                continue
            seen.add(instance_id)
            try:
                check_payload_size(entry.params)
            except StepstoneError as exc:
                errors.append(BatchError.of(index, instance_id, exc))
                continue
            items.append(
                (
                    index,
                    NewInstance(
                        id=instance_id,
                        params=entry.params,
                        trigger_source=trigger_source,
                        success_retention_ms=entry.success_retention_ms,
                        error_retention_ms=entry.error_retention_ms,
                    ),
                )
            )
        records: list[InstanceRecord] = []
        if items:
            workflow, records = await self._create(
                account_id, workflow, stamp([item for _, item in items]), skip_existing=True
            )
            metrics.INSTANCES_CREATED.labels(workflow.name).inc(len(records))
        created = {r.id: r for r in records}
        records = [created[item.id] for _, item in items if item.id in created]
        errors.extend(
            BatchError.of(index, item.id, InstanceAlreadyExists())
            for index, item in items
            if item.id not in created
        )
        errors.sort(key=lambda e: e.index)
        return workflow, records, errors


def _claimed(record: InstanceRecord, item: NewInstance, owner: str) -> Claim:
    """The claim an instance created claimed starts with: running, at epoch 1, its history
    the one event the create wrote (no other can exist yet; no step reads its id)."""
    running = dataclasses.replace(record, status=Status.RUNNING, started_on=record.created_on)
    queued = EventRecord(
        0, record.created_on, EventType.WORKFLOW_QUEUED, None, None,
        item.queued_data(record.version_id),
    )  # fmt: skip
    return Claim(running, owner, 1, 0, [queued])
