"""Use-cases shared by the HTTP API, the CLI, the dashboard and the embedding API.

Each operation validates its input, applies the lifecycle rules and calls the storage
contract. Nothing here knows about HTTP or permissions; errors are ``StepstoneError``s with the
stable codes every front-end reports.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from stepstone.audit import entry as audit_entry
from stepstone.authoring.durations import InvalidDurationError, parse_duration
from stepstone.engine.clock import Clock, SystemClock
from stepstone.errors import (
    CannotRestart,
    CannotTerminate,
    DuplicateInBatch,
    InstanceAlreadyExists,
    InstanceNotFound,
    InvalidEventType,
    InvalidInstanceId,
    InvalidParams,
    InvalidRequest,
    InvalidWorkflowDefinition,
    InvalidWorkflowName,
    StepstoneError,
    WorkflowNotFound,
)
from stepstone.loader import WorkflowLoadError, load_class
from stepstone.model import history as h
from stepstone.model.actors import EMBEDDED_ACTOR, Actor
from stepstone.model.ops_records import AuditEntry
from stepstone.model.statuses import (
    TERMINAL,
    Status,
    check_send_event,
    check_terminate,
    pause_target,
    resume_target,
)
from stepstone.observability import metrics
from stepstone.observability.tracing import stamp
from stepstone.storage.base import (
    JURISDICTIONS,
    Conflict,
    EventRecord,
    InstanceQuery,
    InstanceRecord,
    InstanceSummary,
    NewEvent,
    NewInstance,
    Storage,
    Transition,
    WorkflowDefinition,
    WorkflowRecord,
)
from stepstone.validation import (
    addressable_id_problem,
    event_type_problem,
    instance_id_problem,
    workflow_name_problem,
)

log = logging.getLogger("stepstone.ops")

MAX_PAYLOAD_BYTES = 1 << 20
MAX_STEPS_LIMIT = 25_000
# Cloudflare sets no maximum for concurrency.limit; this keeps it a 32-bit integer.
MAX_CONCURRENCY_LIMIT = 2**31 - 1
MAX_BATCH = 100
MAX_SCHEDULES = 100
# Ids the object form of createBatch refuses besides cf_<64 hex>: they name REST routes
# (.../instances/batch, .../instances/terminate), so such an instance could not be addressed.
RESERVED_BATCH_IDS = frozenset({"batch", "terminate", "terminateAll"})
RESTART_TYPES = {"do": h.DO, "sleep": h.SLEEP, "waitForEvent": h.WAIT}
_COUNTER_SUFFIX = re.compile(r"-\d+$")
# Cloudflare's wording for an engine stopped by its user (workflows-shared ABORT_REASONS),
# recorded as the error of the attempt that was running.
ABORTED_BY_TERMINATE = {"name": "Error", "message": "Aborting engine: User called terminate"}
ABORTED_BY_RESTART = {"name": "Error", "message": "Aborting engine: User called restart"}


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """One instance to create; ``params`` is the payload already encoded as JSON."""

    id: str | None = None
    params: bytes = b"null"
    success_retention_ms: int | None = None
    error_retention_ms: int | None = None
    schedule: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class BatchError:
    """Why entry ``index`` of a createBatch object form was not created."""

    index: int
    id: str | None
    code: int
    message: str

    @classmethod
    def of(cls, index: int, instance_id: str | None, error: StepstoneError) -> BatchError:
        return cls(index, instance_id, error.code, error.message)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class RestartFrom:
    name: str
    count: int = 1
    type: str = "do"
    # A Stepstone extension: "drop" (Cloudflare's behaviour) forgets the events the dropped
    # steps had received and any not yet consumed; "replay" keeps the unconsumed ones and
    # sends the consumed ones again, in the order they first arrived, for the new run.
    events: str = "drop"


RESTART_EVENTS = ("drop", "replay")


def encode_payload(value: Any) -> bytes:
    """Encode a payload given as a Python value, within the 1 MiB limit."""
    try:
        data = orjson.dumps(value)
    except TypeError as exc:
        raise InvalidParams(f"the payload is not JSON-serialisable: {exc}") from None
    check_payload_size(data)
    return data


def check_payload_size(data: bytes) -> None:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise InvalidParams(f"the payload is {len(data)} bytes; the limit is 1 MiB")


def retention_ms(value: Any, what: str) -> int | None:
    if value is None:
        return None
    try:
        ms = parse_duration(value)
    except InvalidDurationError as exc:
        raise InvalidRequest(f"{what}: {exc}") from None
    if ms <= 0:
        raise InvalidRequest(f"{what} must be greater than 0")
    return ms


def validate_schedules(schedules: Sequence[str]) -> tuple[str, ...]:
    # Imported here: the cron module creates instances through this one.
    from stepstone.cron import InvalidCronError, validate

    if len(schedules) > MAX_SCHEDULES:
        raise InvalidWorkflowDefinition(f"at most {MAX_SCHEDULES} schedules")
    for cron in schedules:
        try:
            validate(cron)
        except InvalidCronError as exc:
            raise InvalidWorkflowDefinition(str(exc)) from None
    return tuple(schedules)


class Operations:
    def __init__(
        self,
        storage: Storage,
        *,
        clock: Clock | None = None,
        check_importable: bool = True,
        on_workflows_changed: Callable[[], None] | None = None,
    ) -> None:
        self.storage = storage
        self.clock = clock or SystemClock()
        self.check_importable = check_importable
        self.on_workflows_changed = on_workflows_changed
        # Workflow name -> why this process's worker cannot import its class: creating an
        # instance that no worker here can run is refused (10202) rather than left queued.
        self.unloadable: dict[str, str] = {}

    def now(self) -> int:
        return self.clock.now_ms()

    # --- workflows --------------------------------------------------------------------------

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
        if self.on_workflows_changed is not None:
            self.on_workflows_changed()
        return record

    async def workflow(self, account_id: str, name: str) -> WorkflowRecord:
        check_workflow_name(name)
        record = await self.storage.get_workflow(account_id, name)
        if record is None:
            raise WorkflowNotFound(f"Workflow {name!r} not found")
        return record

    async def delete_workflow(self, account_id: str, name: str) -> None:
        check_workflow_name(name)
        if not await self.storage.delete_workflow(account_id, name):
            raise WorkflowNotFound(f"Workflow {name!r} not found")
        if self.on_workflows_changed is not None:
            self.on_workflows_changed()

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
        workflow = await self.workflow(account_id, workflow_name)
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
        records = await self.storage.create_instances(
            workflow.pk, workflow.version.id, stamp(items), self.now(), skip_existing=skip_existing
        )
        metrics.INSTANCES_CREATED.labels(workflow.name).inc(len(records))
        return workflow, records

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
        workflow = await self.workflow(account_id, workflow_name)
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
            records = await self.storage.create_instances(
                workflow.pk,
                workflow.version.id,
                stamp([item for _, item in items]),
                self.now(),
                skip_existing=True,
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

    async def instance(
        self, account_id: str, workflow_name: str, instance_id: str
    ) -> tuple[WorkflowRecord, InstanceRecord]:
        workflow = await self.workflow(account_id, workflow_name)
        problem = addressable_id_problem(instance_id)
        if problem:
            raise InvalidInstanceId(f"invalid instance id {instance_id!r}: {problem}")
        record = await self.storage.get_instance(workflow.pk, instance_id)
        if record is None:
            raise InstanceNotFound(f"Instance {instance_id!r} not found")
        return workflow, record

    async def instance_page(
        self, workflow_pk: int, query: InstanceQuery
    ) -> tuple[list[InstanceRecord], bool]:
        """One page of a workflow's instances, and whether more follow (one extra row says)."""
        rows = await self.storage.list_instances(workflow_pk, replace(query, limit=query.limit + 1))
        return rows[: query.limit], len(rows) > query.limit

    async def history(self, instance: InstanceRecord) -> h.InstanceHistory:
        return h.fold(await self.storage.load_events(instance.pk))

    async def instance_summary(
        self, account_id: str, workflow_name: str, instance_id: str
    ) -> tuple[WorkflowRecord, InstanceRecord, InstanceSummary]:
        """The instance and what its status answer needs, at a cost the history's length
        does not change (``ops.instance``'s checks and errors)."""
        workflow = await self.workflow(account_id, workflow_name)
        problem = addressable_id_problem(instance_id)
        if problem:
            raise InvalidInstanceId(f"invalid instance id {instance_id!r}: {problem}")
        found = await self.storage.get_instance_summary(workflow.pk, instance_id)
        if found is None:
            raise InstanceNotFound(f"Instance {instance_id!r} not found")
        return workflow, *found

    async def step_history(self, instance: InstanceRecord, name: str) -> h.InstanceHistory:
        """The history folded from the events of the steps called ``name`` only (a step, a
        wait and a sleep may share a name): enough to answer for one step, or to say it is of
        another kind, without reading the rest. Instance-level facts are not in it."""
        kinds = (h.DO, h.WAIT, h.SLEEP)
        return h.fold(await self.storage.load_step_events(instance.pk, name, kinds))

    async def _pause(self, account_id: str, workflow_name: str, instance_id: str) -> str:
        async def plan(instance: InstanceRecord) -> Transition | None:
            target = pause_target(instance.status)
            if target is None:
                return None
            now = self.now()
            if target == Status.WAITING_FOR_PAUSE:
                return Transition(
                    status=target, events=[NewEvent("workflow_waiting_for_pause", now)]
                )
            return Transition(
                status=target, paused_at=now, events=[NewEvent("workflow_paused", now)]
            )

        return await self._transition(account_id, workflow_name, instance_id, plan)

    async def _resume(self, account_id: str, workflow_name: str, instance_id: str) -> str:
        async def plan(instance: InstanceRecord) -> Transition | None:
            target = resume_target(instance.status)
            if target is None:
                return None
            now = self.now()
            if target == Status.RUNNING:
                return Transition(status=target, events=[NewEvent("workflow_running", now)])
            paused_ms = max(0, now - (instance.paused_at or now))
            data = orjson.dumps({"pausedMs": paused_ms})
            return Transition(
                status=target,
                runnable=True,
                priority=0,
                clear_paused_at=True,
                events=[NewEvent("workflow_running", now, data)],
            )

        return await self._transition(account_id, workflow_name, instance_id, plan)

    async def _terminate(
        self,
        account_id: str,
        workflow_name: str,
        instance_id: str,
        *,
        rollback: bool = False,
        actor: Actor = EMBEDDED_ACTOR,
    ) -> str:
        terminated: list[int] = []

        async def plan(instance: InstanceRecord) -> Transition | None:
            check_terminate(instance.status)
            terminated[:] = [instance.pk]
            if rollback:
                return Transition(
                    status=Status.ROLLING_BACK,
                    runnable=True,
                    priority=0,
                    release_worker=True,
                    control="terminate_rollback",
                    closing=end_running_attempts(ABORTED_BY_TERMINATE, self.now()),
                )
            data = orjson.dumps({"trigger": {"source": "api"}})
            now = self.now()
            return Transition(
                status=Status.TERMINATED,
                release_worker=True,
                ended=True,
                closing=end_running_attempts(ABORTED_BY_TERMINATE, now),
                events=[NewEvent("workflow_terminated", now, data)],
            )

        status = await self._transition(account_id, workflow_name, instance_id, plan)
        metrics.instance_ended(workflow_name, status)
        # A parent's attached children end with it; detached ones run on.
        # The planned instance's pk, so a terminate costs no second read of the instance.
        # A child's terminate is audited as the parent terminator's.
        await self.terminate_children(account_id, terminated[0], actor)
        return status

    async def _restart(
        self,
        account_id: str,
        workflow_name: str,
        instance_id: str,
        *,
        from_: RestartFrom | None = None,
    ) -> str:
        async def plan(instance: InstanceRecord) -> Transition:
            now = self.now()
            if from_ is None:
                queued = orjson.dumps(
                    {
                        "versionId": instance.version_id,
                        "trigger": {"source": instance.trigger_source},
                    }
                )
                return Transition(
                    status=Status.QUEUED,
                    runnable=True,
                    release_worker=True,
                    reset_history=True,
                    reset_streams=True,
                    clear_outcome=True,
                    clear_paused_at=True,
                    events=[NewEvent("workflow_queued", now, queued)],
                )
            events = await self.storage.load_events(instance.pk)
            drop, streams = restart_cut(events, from_)
            replay[:] = consumed_events(events, drop) if from_.events == "replay" else []
            target[:] = [instance.pk]
            return Transition(
                status=Status.QUEUED,
                runnable=True,
                release_worker=True,
                reset_history=drop,
                reset_streams=streams,
                clear_outcome=True,
                clear_paused_at=True,
                keep_pending=from_.events == "replay",
                # A step running beside the restart point (asyncio.gather) keeps its group.
                closing=end_running_attempts(ABORTED_BY_RESTART, now),
            )

        if from_ is not None and from_.events not in RESTART_EVENTS:
            raise InvalidRequest("events must be drop or replay")
        replay: list[tuple[str, bytes]] = []
        target: list[int] = []
        status = await self._transition(account_id, workflow_name, instance_id, plan)
        # After the restart's commit: a crash in between loses these re-sends (the restart
        # itself stands), which the audit entry's "events": "replay" lets an operator spot.
        for event_type, payload in replay:
            await self.storage.deliver_event(target[0], event_type, payload, self.now())
        return status

    async def _send_event(
        self,
        account_id: str,
        workflow_name: str,
        instance_id: str,
        event_type: str,
        payload: bytes,
    ) -> int:
        problem = event_type_problem(event_type)
        if problem:
            raise InvalidEventType(f"invalid event type {event_type!r}: {problem}")
        check_payload_size(payload)
        _, instance = await self.instance(account_id, workflow_name, instance_id)
        check_send_event(instance.status)
        now = self.now()
        if not await self.storage.deliver_event(instance.pk, event_type, payload, now):
            raise InstanceNotFound(f"Instance {instance_id!r} not found")
        return now

    async def _delete_instances(
        self, account_id: str, workflow_name: str, instance_ids: Sequence[str]
    ) -> list[str]:
        workflow = await self.workflow(account_id, workflow_name)
        for instance_id in instance_ids:
            problem = addressable_id_problem(instance_id)
            if problem:
                raise InvalidInstanceId(f"invalid instance id {instance_id!r}: {problem}")
        return await self.storage.delete_instances(workflow.pk, instance_ids)

    # --- operator actions, audited (a Stepstone extension: stepstone.audit) ----------------
    # Each action records one audit entry, whatever its outcome, as ``actor``. ``record``
    # collects the entry instead of writing it (a bulk job writes a page's entries at once).

    async def pause(
        self,
        account_id: str,
        workflow_name: str,
        instance_id: str,
        *,
        actor: Actor = EMBEDDED_ACTOR,
        record: list[AuditEntry] | None = None,
        bulk_job_id: str | None = None,
    ) -> str:
        work = self._pause(account_id, workflow_name, instance_id)
        where = (account_id, workflow_name, instance_id)
        result: str = await self._audited(actor, "pause", where, {}, work, record, bulk_job_id)
        return result

    async def resume(
        self,
        account_id: str,
        workflow_name: str,
        instance_id: str,
        *,
        actor: Actor = EMBEDDED_ACTOR,
        record: list[AuditEntry] | None = None,
        bulk_job_id: str | None = None,
    ) -> str:
        work = self._resume(account_id, workflow_name, instance_id)
        where = (account_id, workflow_name, instance_id)
        result: str = await self._audited(actor, "resume", where, {}, work, record, bulk_job_id)
        return result

    async def terminate(
        self,
        account_id: str,
        workflow_name: str,
        instance_id: str,
        *,
        rollback: bool = False,
        actor: Actor = EMBEDDED_ACTOR,
        record: list[AuditEntry] | None = None,
        bulk_job_id: str | None = None,
    ) -> str:
        work = self._terminate(
            account_id, workflow_name, instance_id, rollback=rollback, actor=actor
        )
        where = (account_id, workflow_name, instance_id)
        detail = {"rollback": True} if rollback else {}
        result: str = await self._audited(
            actor, "terminate", where, detail, work, record, bulk_job_id
        )
        return result

    async def terminate_children(
        self, account_id: str, instance_pk: int, actor: Actor = EMBEDDED_ACTOR
    ) -> list[str]:
        """After a parent's terminate: terminate its attached children still running, as
        ``actor`` (each child's terminate does the same for its own children); detached
        children run on. Returns the ids of the children terminated.

        An operator's stop is not a failure of the child: its parent is ending anyway, so this
        runs after the parent's terminate and never instead of it.
        """
        stopped = []
        links = await self.storage.instance_links(instance_pk)
        for child in links.children:
            if child.detached or child.status in TERMINAL:
                continue
            try:
                await self.terminate(account_id, child.workflow, child.id, actor=actor)
            except (CannotTerminate, InstanceNotFound, WorkflowNotFound):
                continue  # ended or deleted meanwhile
            stopped.append(child.id)
        return stopped

    async def restart(
        self,
        account_id: str,
        workflow_name: str,
        instance_id: str,
        *,
        from_: RestartFrom | None = None,
        actor: Actor = EMBEDDED_ACTOR,
        record: list[AuditEntry] | None = None,
        bulk_job_id: str | None = None,
    ) -> str:
        work = self._restart(account_id, workflow_name, instance_id, from_=from_)
        where = (account_id, workflow_name, instance_id)
        detail: dict[str, Any] = {}
        if from_ is not None:
            detail["from"] = {"name": from_.name, "count": from_.count, "type": from_.type}
            if from_.events != "drop":
                detail["events"] = from_.events
        result: str = await self._audited(
            actor, "restart", where, detail, work, record, bulk_job_id
        )
        return result

    async def send_event(
        self,
        account_id: str,
        workflow_name: str,
        instance_id: str,
        event_type: str,
        payload: bytes,
        *,
        actor: Actor = EMBEDDED_ACTOR,
    ) -> int:
        # The payload is not recorded: it may hold data the audit reader should not see.
        work = self._send_event(account_id, workflow_name, instance_id, event_type, payload)
        where = (account_id, workflow_name, instance_id)
        detail = {"type": event_type, "bytes": len(payload)}
        result: int = await self._audited(actor, "send_event", where, detail, work, None, None)
        return result

    async def delete_instances(
        self,
        account_id: str,
        workflow_name: str,
        instance_ids: Sequence[str],
        *,
        actor: Actor = EMBEDDED_ACTOR,
        record: list[AuditEntry] | None = None,
        bulk_job_id: str | None = None,
    ) -> list[str]:
        sink: list[AuditEntry] = []
        try:
            deleted = await self._delete_instances(account_id, workflow_name, instance_ids)
        except StepstoneError as exc:
            for instance_id in instance_ids:
                sink.append(
                    audit_entry(
                        actor,
                        account_id,
                        "delete",
                        self.now(),
                        workflow_name=workflow_name,
                        instance_id=instance_id,
                        error=exc,
                        bulk_job_id=bulk_job_id,
                    )
                )
            await self._write_audit(sink, record)
            raise
        gone = set(deleted)
        for instance_id in instance_ids:
            missing = (
                None
                if instance_id in gone
                else InstanceNotFound(f"Instance {instance_id!r} not found")
            )
            sink.append(
                audit_entry(
                    actor,
                    account_id,
                    "delete",
                    self.now(),
                    workflow_name=workflow_name,
                    instance_id=instance_id,
                    error=missing,
                    bulk_job_id=bulk_job_id,
                )
            )
        await self._write_audit(sink, record)
        return deleted

    async def record_action(
        self,
        actor: Actor,
        account_id: str,
        action: str,
        *,
        workflow_name: str | None = None,
        instance_id: str | None = None,
        detail: dict[str, Any] | None = None,
        error: BaseException | None = None,
        bulk_job_id: str | None = None,
    ) -> None:
        """Record an action that is not one of the instance operations (a bulk job's start or
        cancel, a workflow deleted)."""
        item = audit_entry(
            actor,
            account_id,
            action,
            self.now(),
            workflow_name=workflow_name,
            instance_id=instance_id,
            error=error,
            detail=detail,
            bulk_job_id=bulk_job_id,
        )
        await self._write_audit([item], None)

    async def _audited(
        self,
        actor: Actor,
        action: str,
        where: tuple[str, str, str],
        detail: dict[str, Any],
        work: Awaitable[Any],
        record: list[AuditEntry] | None,
        bulk_job_id: str | None,
    ) -> Any:
        account_id, workflow_name, instance_id = where
        outcome = dict(detail)
        try:
            result = await work
        except Exception as exc:
            failed = audit_entry(
                actor,
                account_id,
                action,
                self.now(),
                workflow_name=workflow_name,
                instance_id=instance_id,
                error=exc,
                detail=outcome,
                bulk_job_id=bulk_job_id,
            )
            await self._write_audit([failed], record)
            raise
        if isinstance(result, str):
            outcome["status"] = result
        item = audit_entry(
            actor,
            account_id,
            action,
            self.now(),
            workflow_name=workflow_name,
            instance_id=instance_id,
            detail=outcome,
            bulk_job_id=bulk_job_id,
        )
        await self._write_audit([item], record)
        return result

    async def _write_audit(self, items: list[AuditEntry], record: list[AuditEntry] | None) -> None:
        if record is not None:
            record.extend(items)
            return
        try:
            await self.storage.append_audit(items)
        except Exception:
            # The action itself happened (or failed on its own): a lost audit entry is logged
            # loudly rather than turned into a failure the caller would retry.
            log.exception("audit: could not record %s", [i.action for i in items])

    async def _transition(
        self,
        account_id: str,
        workflow_name: str,
        instance_id: str,
        plan: Callable[[InstanceRecord], Any],
    ) -> str:
        """Apply ``plan`` atomically; re-plan if the instance moved meanwhile."""
        for _ in range(20):
            _, instance = await self.instance(account_id, workflow_name, instance_id)
            transition = await plan(instance)
            if transition is None:
                return instance.status
            try:
                await self.storage.transition_instance(
                    instance.pk, instance.status, transition, self.now()
                )
            except Conflict:
                continue
            return str(transition.status)
        raise Conflict(f"instance {instance_id!r} kept changing; try again")


def end_running_attempts(
    error: dict[str, Any], now: int
) -> Callable[[Sequence[EventRecord]], list[NewEvent]]:
    """A ``Transition.closing`` that records each attempt still running as failed with
    ``error``. The worker running it is fenced by the same transition, so the attempt can
    record nothing itself, and its step is never retried by that activation."""

    def closing(events: Sequence[EventRecord]) -> list[NewEvent]:
        ended = []
        for (kind, name), record in h.fold(list(events)).steps.items():
            dangling = record.dangling_attempt
            if dangling is None:
                continue
            prefix = "rollback_" if kind == h.ROLLBACK else ""
            data = orjson.dumps({"attempt": dangling.attempt, "error": error})
            ended.append(NewEvent(prefix + "attempt_errored", now, data, kind, name))
        return ended

    return closing


def consumed_events(
    events: Sequence[EventRecord], dropped: Sequence[int]
) -> list[tuple[str, bytes]]:
    """``(type, payload)`` of each event a wait_for_event in the dropped groups consumed,
    in the order the events arrived."""
    gone = set(dropped)
    found: list[tuple[int, int, str, bytes]] = []
    for event in events:
        if event.event_id in gone and event.type == "wait_completed" and event.data:
            got = orjson.loads(event.data).get("event") or {}
            if isinstance(got.get("type"), str):
                payload = orjson.dumps(got.get("payload"))
                found.append((int(got.get("timestamp") or 0), event.event_id, got["type"], payload))
    return [(kind, payload) for _, _, kind, payload in sorted(found)]


def check_workflow_name(name: str) -> None:
    problem = workflow_name_problem(name)
    if problem:
        raise InvalidWorkflowName(f"invalid workflow name {name!r}: {problem}")


def restart_cut(events: Sequence[Any], target: RestartFrom) -> tuple[list[int], list[str]]:
    """Event ids to drop for a restart from ``target``, and the streams of dropped steps.

    The target step's group and every group that started after it go; so do instance-level
    events other than the first ``workflow_queued`` and ``workflow_started``.
    """
    kind = RESTART_TYPES.get(target.type)
    if kind is None:
        raise InvalidRequest("from.type must be do, sleep or waitForEvent")
    history = h.fold(list(events))
    seen = 0
    cut: int | None = None
    for record in history.ordered():
        if record.kind == kind and _COUNTER_SUFFIX.sub("", record.name) == target.name:
            seen += 1
            if seen == target.count:
                cut = record.first_event_id
                break
    if cut is None:
        raise CannotRestart(f'Step "{target.name}" not found in execution history')
    dropped_groups = {k for k, s in history.steps.items() if s.first_event_id >= cut}
    drop: list[int] = []
    kept_lifecycle: set[str] = set()
    for event in events:
        if event.step_kind is None:
            if event.type in ("workflow_queued", "workflow_started") and (
                event.type not in kept_lifecycle
            ):
                kept_lifecycle.add(event.type)
                continue
            drop.append(event.event_id)
        elif (event.step_kind, event.step_name) in dropped_groups:
            drop.append(event.event_id)
    streams = [name for kind_, name in dropped_groups if kind_ == h.DO]
    return drop, streams
