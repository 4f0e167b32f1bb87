"""Bulk actions on a filter (a Stepstone extension): one durable job acts on every instance of
a workflow that a filter selects.

A job is a row (``bulk_jobs``) that any process with a worker claims with a lease
(``BulkRunner.tick``, one of the worker's periodic jobs), so it survives a restart and two
servers never run it at once. It pages through the selection by keyset ``(created_on, id)``,
oldest first, so memory stays flat however many instances match; each page's outcomes,
counters and the cursor are written in one transaction. A page redone after a crash skips the
instances it has an outcome for already, so every instance is acted on at most once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stepstone.engine.clock import Clock, SystemClock
from stepstone.errors import (
    BulkJobNotFound,
    CannotRestart,
    InvalidRequest,
    StepstoneError,
    WorkflowNotFound,
)
from stepstone.model import history as h
from stepstone.model.actors import Actor
from stepstone.model.ops_records import (
    BULK_COMPLETE,
    BULK_FAILED,
    BULK_QUEUED,
    ITEM_DONE,
    ITEM_FAILED,
    ITEM_PENDING,
    ITEM_SKIPPED,
    AuditEntry,
    BulkItem,
    BulkJobRecord,
    BulkProgress,
    InstanceFilter,
)
from stepstone.model.statuses import ALL_STATUSES, TERMINAL, Status, pause_target, resume_target
from stepstone.ops import RESTART_TYPES, Operations, RestartFrom
from stepstone.storage.base import InstanceRecord

log = logging.getLogger("stepstone.bulk")

PAUSE = "pause"
RESUME = "resume"
TERMINATE = "terminate"
RESTART = "restart"
DELETE = "delete"
RETRY_ERRORED = "retry_errored"
ACTIONS = (PAUSE, RESUME, TERMINATE, RESTART, DELETE, RETRY_ERRORED)

PAGE_SIZE = 200
# Instances of one page acted on at once: PostgreSQL overlaps the round trips; SQLite's one
# writer serialises them anyway.
PARALLEL = 16
LEASE_MS = 30_000
TICK_SECONDS = 2.0
DRY_RUN_PAGE = 50
MAX_PREFIX = 100
MAX_ERROR_NAME = 255
_COUNTER_SUFFIX = re.compile(r"-\d+$")
INTERRUPTED = (
    "interrupted: its server stopped while acting on it, so the action may or may not have"
    " been applied; check the instance (it is not acted on twice)"
)
_STEP_TYPES = {kind: name for name, kind in RESTART_TYPES.items()}


@dataclass(frozen=True, slots=True)
class BulkSpec:
    """What a job does: the action, its options, and the filter."""

    action: str
    where: InstanceFilter
    rollback: bool = False
    from_step: str | None = None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "action": self.action,
                "rollback": self.rollback,
                "from_step": self.from_step,
                "filter": filter_dict(self.where),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> BulkSpec:
        value = orjson.loads(data)
        where = value["filter"]
        return cls(
            action=value["action"],
            rollback=bool(value.get("rollback")),
            from_step=value.get("from_step"),
            where=InstanceFilter(
                statuses=tuple(where.get("status") or ()),
                created_after=where.get("created_after"),
                created_before=where.get("created_before"),
                id_prefix=where.get("id_prefix"),
                error_name=where.get("error_name"),
            ),
        )


def filter_dict(where: InstanceFilter) -> dict[str, Any]:
    return {
        "status": list(where.statuses),
        "created_after": where.created_after,
        "created_before": where.created_before,
        "id_prefix": where.id_prefix,
        "error_name": where.error_name,
    }


def make_spec(
    action: str,
    *,
    statuses: Sequence[str] = (),
    created_after: int | None = None,
    created_before: int | None = None,
    id_prefix: str | None = None,
    error_name: str | None = None,
    rollback: bool = False,
    from_step: str | None = None,
) -> BulkSpec:
    """A validated spec; every bad input is a 400 saying which and why."""
    action = action.replace("-", "_")
    if action not in ACTIONS:
        raise InvalidRequest(f"action must be one of {', '.join(ACTIONS)}; got {action!r}")
    unknown = [s for s in statuses if s not in ALL_STATUSES]
    if unknown:
        raise InvalidRequest(
            f"unknown status {unknown[0]!r}; statuses are {', '.join(ALL_STATUSES)}"
        )
    if id_prefix is not None and not 1 <= len(id_prefix) <= MAX_PREFIX:
        raise InvalidRequest(f"id_prefix must be 1 to {MAX_PREFIX} characters")
    if error_name is not None and not 1 <= len(error_name) <= MAX_ERROR_NAME:
        raise InvalidRequest(f"error_name must be 1 to {MAX_ERROR_NAME} characters")
    if rollback and action != TERMINATE:
        raise InvalidRequest("rollback applies to terminate only")
    if from_step is not None and action != RESTART:
        raise InvalidRequest("from_step applies to restart only (retry_errored finds the step)")
    if from_step is not None and not 1 <= len(from_step) <= 256:
        raise InvalidRequest("from_step must be a step name of 1 to 256 characters")
    return BulkSpec(
        action=action,
        where=InstanceFilter(
            statuses=tuple(dict.fromkeys(statuses)),
            created_after=created_after,
            created_before=created_before,
            id_prefix=id_prefix,
            error_name=error_name,
        ),
        rollback=rollback,
        from_step=from_step,
    )


@dataclass(frozen=True, slots=True)
class DryRun:
    matched: int
    first_page: list[InstanceRecord]


class BulkService:
    """Starting, reading and cancelling jobs: what the API, CLI and dashboard call."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops
        self.storage = ops.storage

    async def dry_run(self, account_id: str, workflow_name: str, spec: BulkSpec) -> DryRun:
        workflow = await self.ops.workflow(account_id, workflow_name)
        matched = await self.storage.count_selected(workflow.pk, spec.where)
        page = await self.storage.select_instances(workflow.pk, spec.where, None, DRY_RUN_PAGE)
        return DryRun(matched, page)

    async def start(
        self, account_id: str, workflow_name: str, spec: BulkSpec, actor: Actor
    ) -> BulkJobRecord:
        workflow = await self.ops.workflow(account_id, workflow_name)
        # The count is the progress bar's total as of the start; instances created later that
        # match are acted on too (the job pages to the end), so done may exceed it.
        matched = await self.storage.count_selected(workflow.pk, spec.where)
        now = self.ops.now()
        job = BulkJobRecord(
            id=str(uuid.uuid4()),
            account_id=account_id,
            workflow_name=workflow.name,
            action=spec.action,
            spec=spec.encode(),
            actor=orjson.dumps(actor.as_dict()),
            status=BULK_QUEUED,
            matched=matched,
            done=0,
            skipped=0,
            failed=0,
            cursor=None,
            lease_owner=None,
            lease_expires=None,
            error=None,
            created_on=now,
            modified_on=now,
            finished_on=None,
        )
        await self.storage.create_bulk_job(job)
        await self.ops.record_action(
            actor,
            account_id,
            "bulk.start",
            workflow_name=workflow.name,
            detail={"action": spec.action, "filter": filter_dict(spec.where), "matched": matched},
            bulk_job_id=job.id,
        )
        return job

    async def get(self, account_id: str, job_id: str) -> BulkJobRecord:
        job = await self.storage.get_bulk_job(account_id, job_id)
        if job is None:
            raise BulkJobNotFound(f"bulk job {job_id!r} not found")
        return job

    async def cancel(self, account_id: str, job_id: str, actor: Actor) -> BulkJobRecord:
        job = await self.get(account_id, job_id)
        cancelled = await self.storage.cancel_bulk_job(account_id, job_id, self.ops.now())
        await self.ops.record_action(
            actor,
            account_id,
            "bulk.cancel",
            workflow_name=job.workflow_name,
            detail={"cancelled": cancelled, "status": job.status},
            bulk_job_id=job_id,
        )
        return await self.get(account_id, job_id)


class BulkRunner:
    """Runs queued jobs; one of each worker's periodic jobs. ``tick`` claims one job at a time
    and runs it to its end, renewing the lease with every page."""

    def __init__(
        self,
        ops: Operations,
        *,
        clock: Clock | None = None,
        page_size: int = PAGE_SIZE,
        lease_ms: int = LEASE_MS,
        owner: str | None = None,
    ) -> None:
        self.ops = ops
        self.storage = ops.storage
        self.clock = clock or ops.clock or SystemClock()
        self.page_size = page_size
        self.lease_ms = lease_ms
        self.owner = owner or f"bulk-{uuid.uuid4()}"

    async def tick(self) -> int:
        """Run claimable jobs until none is left; return how many ran."""
        ran = 0
        while True:
            job = await self.storage.claim_bulk_job(self.owner, self.clock.now_ms(), self.lease_ms)
            if job is None:
                return ran
            await self.run(job)
            ran += 1

    async def run(self, job: BulkJobRecord, *, max_pages: int | None = None) -> bool:
        """Page through ``job`` from its cursor; False if it stopped before the end (lease
        lost, cancelled, or ``max_pages`` reached, which tests use to simulate a crash)."""
        spec = BulkSpec.decode(job.spec)
        actor = Actor.from_dict(orjson.loads(job.actor))
        try:
            workflow = await self.ops.workflow(job.account_id, job.workflow_name)
        except WorkflowNotFound as exc:
            return await self._end(job, job.cursor, BULK_FAILED, str(exc))
        cursor = job.cursor
        pages = 0
        while max_pages is None or pages < max_pages:
            # Renew the lease before acting, so a cancel or a takeover stops the job before a
            # page, not after it.
            held = BulkProgress(items=(), cursor=cursor)
            now = self.clock.now_ms()
            if not await self.storage.advance_bulk_job(
                job.id, self.owner, held, now, self.lease_ms
            ):
                log.info("bulk job %s: cancelled or taken over; stopping", job.id)
                return False
            page = await self.storage.select_instances(
                workflow.pk, spec.where, cursor, self.page_size
            )
            if not page:
                return await self._end(job, cursor, BULK_COMPLETE, None)
            recorded = await self.storage.recorded_bulk_items(job.id, [i.id for i in page])
            interrupted = tuple(
                BulkItem(i.id, ITEM_SKIPPED, INTERRUPTED)
                for i in page
                if recorded.get(i.id) == ITEM_PENDING
            )
            todo = [i for i in page if i.id not in recorded]
            if interrupted and not await self._advance(job, BulkProgress(interrupted, cursor)):
                return False
            for start in range(0, len(todo), PARALLEL):
                chunk = todo[start : start + PARALLEL]
                # Marked before acting, so a stop in between leaves "pending", never a second
                # action on the same instance.
                marks = tuple(BulkItem(i.id, ITEM_PENDING) for i in chunk)
                if not await self._advance(job, BulkProgress(marks, cursor)):
                    return False
                audit: list[AuditEntry] = []
                items = await asyncio.gather(
                    *(self._act(job, spec, actor, i, audit) for i in chunk)
                )
                await self.storage.append_audit(audit)
                if not await self._advance(job, BulkProgress(tuple(items), cursor)):
                    return False
            cursor = (page[-1].created_on, page[-1].id)
            if not await self._advance(job, BulkProgress((), cursor)):
                return False
            pages += 1
        return False

    async def _advance(self, job: BulkJobRecord, progress: BulkProgress) -> bool:
        now = self.clock.now_ms()
        if await self.storage.advance_bulk_job(job.id, self.owner, progress, now, self.lease_ms):
            return True
        log.info("bulk job %s: cancelled or taken over; stopping", job.id)
        return False

    async def _end(
        self, job: BulkJobRecord, cursor: tuple[int, str] | None, status: str, error: str | None
    ) -> bool:
        progress = BulkProgress(items=(), cursor=cursor, finished=status, error=error)
        now = self.clock.now_ms()
        ended = await self.storage.advance_bulk_job(
            job.id, self.owner, progress, now, self.lease_ms
        )
        if ended:
            final = await self.storage.get_bulk_job(job.account_id, job.id)
            summary = {}
            if final is not None:
                summary = {
                    "status": final.status,
                    "matched": final.matched,
                    "done": final.done,
                    "skipped": final.skipped,
                    "failed": final.failed,
                }
            await self.ops.record_action(
                Actor.from_dict(orjson.loads(job.actor)),
                job.account_id,
                "bulk.end",
                workflow_name=job.workflow_name,
                detail=summary,
                error=None if error is None else RuntimeError(error),
                bulk_job_id=job.id,
            )
        return ended

    async def _act(
        self,
        job: BulkJobRecord,
        spec: BulkSpec,
        actor: Actor,
        instance: InstanceRecord,
        audit: list[AuditEntry],
    ) -> BulkItem:
        skip = _skip_reason(spec, instance.status)
        if skip is not None:
            return BulkItem(instance.id, ITEM_SKIPPED, skip)
        where = (job.account_id, job.workflow_name, instance.id)
        kw: dict[str, Any] = {"actor": actor, "record": audit, "bulk_job_id": job.id}
        try:
            if spec.action == PAUSE:
                await self.ops.pause(*where, **kw)
            elif spec.action == RESUME:
                await self.ops.resume(*where, **kw)
            elif spec.action == TERMINATE:
                await self.ops.terminate(*where, rollback=spec.rollback, **kw)
            elif spec.action == RESTART:
                start = RestartFrom(spec.from_step) if spec.from_step else None
                await self.ops.restart(*where, from_=start, **kw)
            elif spec.action == RETRY_ERRORED:
                start = await self._failed_step(instance)
                await self.ops.restart(*where, from_=start, **kw)
            else:
                deleted = await self.ops.delete_instances(
                    job.account_id, job.workflow_name, [instance.id], **kw
                )
                if not deleted:
                    return BulkItem(instance.id, ITEM_SKIPPED, "already deleted")
        except CannotRestart as exc:
            return BulkItem(instance.id, ITEM_SKIPPED, exc.message)
        except StepstoneError as exc:
            if exc.http_status == 404:
                return BulkItem(instance.id, ITEM_SKIPPED, "deleted meanwhile")
            return BulkItem(instance.id, ITEM_FAILED, f"{exc.code}: {exc.message}")
        except Exception as exc:  # one instance's failure never stops the job
            log.warning("bulk job %s: %s on %s failed: %r", job.id, spec.action, instance.id, exc)
            return BulkItem(instance.id, ITEM_FAILED, f"{type(exc).__name__}: {exc}")
        return BulkItem(instance.id, ITEM_DONE)

    async def _failed_step(self, instance: InstanceRecord) -> RestartFrom | None:
        """The step whose failure errored the instance, as a restart point; None (from the
        start) when the error was raised outside any step."""
        history = h.fold(await self.storage.load_events(instance.pk))
        failed = None
        for step in history.ordered():
            if step.kind in _STEP_TYPES and step.done and step.success is False:
                failed = step
        if failed is None:
            return None
        base = _COUNTER_SUFFIX.sub("", failed.name)
        count = sum(
            1
            for step in history.ordered()
            if step.kind == failed.kind
            and _COUNTER_SUFFIX.sub("", step.name) == base
            and step.first_event_id <= failed.first_event_id
        )
        return RestartFrom(base, count, _STEP_TYPES[failed.kind])


def _skip_reason(spec: BulkSpec, status: str) -> str | None:
    """Why an instance (as its page read it) is left alone, or None to act."""
    if spec.action == PAUSE:
        if status == Status.ROLLING_BACK:
            return "rolling back: cannot pause"
        if pause_target(status) is None:
            return f"{status}: nothing to pause"
    elif spec.action == RESUME:
        if resume_target(status) is None:
            return f"{status}: nothing to resume"
    elif spec.action == TERMINATE:
        if status in TERMINAL:
            return f"{status}: already ended"
    elif spec.action == RETRY_ERRORED and status != Status.ERRORED:
        return f"{status}: not errored"
    return None


def job_dict(job: BulkJobRecord) -> dict[str, Any]:
    """The JSON form the API, CLI and dashboard show."""
    from stepstone.views import iso

    spec = BulkSpec.decode(job.spec)
    processed = job.done + job.skipped + job.failed
    return {
        "id": job.id,
        "workflow": job.workflow_name,
        "action": job.action,
        "status": job.status,
        "filter": filter_dict(spec.where),
        "rollback": spec.rollback,
        "from_step": spec.from_step,
        "actor": orjson.loads(job.actor),
        "matched": job.matched,
        "processed": processed,
        "done": job.done,
        "skipped": job.skipped,
        "failed": job.failed,
        "error": job.error,
        "created_on": iso(job.created_on),
        "modified_on": iso(job.modified_on),
        "finished_on": iso(job.finished_on),
    }
