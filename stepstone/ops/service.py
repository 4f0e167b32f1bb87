"""The commands every front-end shares (register, create, pause, resume, terminate, restart,
send an event, delete): validation, the lifecycle rules, the audit log, then the storage
contract. Nothing here knows about HTTP or permissions; errors are ``StepstoneError``s with the
stable codes every front-end reports."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from stepstone.audit import entry as audit_entry
from stepstone.errors import (
    CannotTerminate,
    InstanceNotFound,
    InvalidEventType,
    InvalidInstanceId,
    InvalidRequest,
    StepstoneError,
    WorkflowNotFound,
)
from stepstone.model.actors import EMBEDDED_ACTOR, Actor
from stepstone.model.events import EventType
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
from stepstone.ops.creates import Creates
from stepstone.ops.inputs import (
    check_payload_size,
)
from stepstone.ops.restarts import (
    ABORTED_BY_RESTART,
    ABORTED_BY_TERMINATE,
    RESTART_EVENTS,
    RestartFrom,
    consumed_events,
    end_running_attempts,
    restart_cut,
)
from stepstone.storage.base import (
    Conflict,
    InstanceRecord,
    NewEvent,
    Transition,
)
from stepstone.validation import (
    addressable_id_problem,
    event_type_problem,
)

log = logging.getLogger("stepstone.ops")


class Operations(Creates):
    """Every command and query a front-end shares; the lifecycle commands are audited."""

    async def _pause(self, account_id: str, workflow_name: str, instance_id: str) -> str:
        async def plan(instance: InstanceRecord) -> Transition | None:
            target = pause_target(instance.status)
            if target is None:
                return None
            now = self.now()
            if target == Status.WAITING_FOR_PAUSE:
                return Transition(
                    status=target, events=[NewEvent(EventType.WORKFLOW_WAITING_FOR_PAUSE, now)]
                )
            return Transition(
                status=target, paused_at=now, events=[NewEvent(EventType.WORKFLOW_PAUSED, now)]
            )

        return await self._transition(account_id, workflow_name, instance_id, plan)

    async def _resume(self, account_id: str, workflow_name: str, instance_id: str) -> str:
        async def plan(instance: InstanceRecord) -> Transition | None:
            target = resume_target(instance.status)
            if target is None:
                return None
            now = self.now()
            if target == Status.RUNNING:
                return Transition(status=target, events=[NewEvent(EventType.WORKFLOW_RUNNING, now)])
            paused_ms = max(0, now - (instance.paused_at or now))
            data = orjson.dumps({"pausedMs": paused_ms})
            return Transition(
                status=target,
                runnable=True,
                priority=0,
                clear_paused_at=True,
                events=[NewEvent(EventType.WORKFLOW_RUNNING, now, data)],
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
                events=[NewEvent(EventType.WORKFLOW_TERMINATED, now, data)],
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
                    events=[NewEvent(EventType.WORKFLOW_QUEUED, now, queued)],
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
