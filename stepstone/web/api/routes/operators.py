"""Operator extensions (not Cloudflare's): bulk actions on a filter and the audit log.

Every path has a ``stepstone`` segment right after the account or workflow, a name no
Cloudflare route uses, so Cloudflare's clients never meet them:

- ``POST   {workflow}/stepstone/bulk``            dry run, or start a bulk job
- ``GET    {workflow}/stepstone/bulk``            the workflow's jobs, newest first
- ``GET    {account}/stepstone/bulk/{job}``       one job's progress and summary
- ``GET    {account}/stepstone/bulk/{job}/items`` per-instance outcomes (skip/fail reasons)
- ``POST   {account}/stepstone/bulk/{job}/cancel``
- ``GET    {account}/stepstone/audit``            the audit log, newest first, cursor paged
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.responses import Response

from stepstone import views
from stepstone.audit import entry_dict
from stepstone.bulk import BulkService, job_dict, make_spec
from stepstone.errors import InvalidRequest
from stepstone.model.actors import ANONYMOUS, TOKEN, Actor
from stepstone.model.ops_records import AuditQuery
from stepstone.web.api import deps
from stepstone.web.api.no_nul import NO_NUL
from stepstone.web.common.auth import NOBODY_NEEDED, Principal
from stepstone.web.common.envelope import ok
from stepstone.web.common.query import parse_date

router = APIRouter(tags=["stepstone extensions"])

BULK = deps.WORKFLOW_PREFIX + "/stepstone/bulk"
JOB = deps.ACCOUNT_PREFIX + "/stepstone/bulk/{job_id}"
AUDIT = deps.ACCOUNT_PREFIX + "/stepstone/audit"
MAX_PER_PAGE = 500


def actor_of(principal: Principal) -> Actor:
    """Who a request acts as, for the audit log."""
    if principal is NOBODY_NEEDED:
        return Actor(ANONYMOUS, principal.name)
    return Actor(TOKEN, principal.name, principal.id)


def request_actor(request: Request) -> Actor:
    return actor_of(deps.principal(request))


StatusName = Literal[
    "queued",
    "running",
    "paused",
    "errored",
    "terminated",
    "complete",
    "waitingForPause",
    "waiting",
    "rollingBack",
]


def _moment(value: str | None, name: str) -> int | None:
    # Left out is no bound; given empty is a mistake worth saying (the schema says date-time).
    if value == "":
        raise InvalidRequest(f"{name} is empty: give an ISO-8601 date, or leave it out")
    return parse_date(value, name)


def _ms(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class BulkFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: list[StatusName] = Field(default_factory=list, max_length=9)
    created_after: datetime | None = Field(default=None, description="inclusive")
    created_before: datetime | None = Field(default=None, description="exclusive")
    id_prefix: str | None = Field(default=None, min_length=1, max_length=100, pattern=NO_NUL)
    error_name: str | None = Field(
        default=None, min_length=1, max_length=255, pattern=NO_NUL, description="the error's name"
    )


class _Bulk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: BulkFilter | None = None
    dry_run: StrictBool = False


class PlainBulk(_Bulk):
    action: Literal["pause", "resume", "delete", "retry_errored", "retry-errored"]


class TerminateBulk(_Bulk):
    action: Literal["terminate"]
    rollback: StrictBool = Field(default=False, description="run rollback handlers")


class RestartBulk(_Bulk):
    action: Literal["restart"]
    from_step: str | None = Field(
        default=None, min_length=1, max_length=256, description="the step to restart from"
    )


# One model per action, so the schema itself says which options go with which action.
BulkRequest = Annotated[PlainBulk | TerminateBulk | RestartBulk, Field(discriminator="action")]


@router.post(BULK, summary="Bulk action on a filter: dry run or start a job (extension)")
async def start_bulk(
    request: Request, account_id: str, workflow_name: str, body: BulkRequest
) -> Response:
    account, name = deps.path(request, "account_id"), deps.path(request, "workflow_name")
    where = body.filter or BulkFilter()
    spec = make_spec(
        body.action,
        statuses=where.status,
        created_after=_ms(where.created_after),
        created_before=_ms(where.created_before),
        id_prefix=where.id_prefix,
        error_name=where.error_name,
        rollback=body.rollback if isinstance(body, TerminateBulk) else False,
        from_step=body.from_step if isinstance(body, RestartBulk) else None,
    )
    service = BulkService(deps.ops(request))
    if body.dry_run:
        workflow = await deps.ops(request).workflow(account, name)
        found = await service.dry_run(account, name, spec)
        return ok(
            {
                "dry_run": True,
                "action": spec.action,
                "matched": found.matched,
                "instances": [views.instance_item(i, workflow) for i in found.first_page],
            }
        )
    job = await service.start(account, name, spec, request_actor(request))
    return ok(job_dict(job))


@router.get(BULK, summary="A workflow's bulk jobs, newest first (extension)")
async def list_bulk(
    request: Request,
    account_id: str,
    workflow_name: str,
    per_page: int = Query(20, ge=1, le=100),
) -> Response:
    account, name = deps.path(request, "account_id"), deps.path(request, "workflow_name")
    await deps.ops(request).workflow(account, name)
    jobs = await deps.ops(request).bulk_jobs(account, name, per_page)
    return ok([job_dict(j) for j in jobs])


@router.get(JOB, summary="A bulk job's progress and summary (extension)")
async def get_bulk(request: Request, account_id: str, job_id: str) -> Response:
    service = BulkService(deps.ops(request))
    job = await service.get(deps.path(request, "account_id"), deps.path(request, "job_id"))
    return ok(job_dict(job))


@router.get(JOB + "/items", summary="What a bulk job did to each instance (extension)")
async def bulk_items(
    request: Request,
    account_id: str,
    job_id: str,
    outcome: Literal["done", "skipped", "failed"] | None = None,
    cursor: str | None = None,
    per_page: int = Query(100, ge=1, le=MAX_PER_PAGE),
) -> Response:
    service = BulkService(deps.ops(request))
    job = await service.get(deps.path(request, "account_id"), deps.path(request, "job_id"))
    items = await deps.ops(request).bulk_items(job.id, outcome, cursor, per_page + 1)
    more = len(items) > per_page
    items = items[:per_page]
    result = [{"id": i.instance_id, "outcome": i.outcome, "reason": i.reason} for i in items]
    info: dict[str, Any] = {"count": len(result), "per_page": per_page}
    if more:
        info["cursor"] = items[-1].instance_id
    return ok(result, info)


@router.post(JOB + "/cancel", summary="Cancel a bulk job between pages (extension)")
async def cancel_bulk(request: Request, account_id: str, job_id: str) -> Response:
    service = BulkService(deps.ops(request))
    job = await service.cancel(
        deps.path(request, "account_id"), deps.path(request, "job_id"), request_actor(request)
    )
    return ok(job_dict(job))


@router.get(AUDIT, summary="The audit log, newest first (extension)")
async def list_audit(
    request: Request,
    account_id: str,
    workflow: str | None = None,
    instance: str | None = None,
    since: str | None = Query(None, description="ISO-8601; entries at or after"),
    until: str | None = Query(None, description="ISO-8601; entries at or before"),
    # Comma-separated, as every list in a query here: a repeated key is refused (the Guard).
    action: str | None = Query(None, description="comma-separated actions, e.g. pause,resume"),
    actor: str | None = None,
    bulk_job: str | None = None,
    cursor: int | None = Query(None, ge=1, description="result_info.cursor of the last page"),
    per_page: int = Query(50, ge=1, le=MAX_PER_PAGE),
) -> Response:
    query = AuditQuery(
        account_id=deps.path(request, "account_id"),
        workflow_name=workflow,
        instance_id=instance,
        since=_moment(since, "since"),
        until=_moment(until, "until"),
        actions=tuple(a for a in (action or "").split(",") if a),
        actor=actor,
        bulk_job_id=bulk_job,
        before=cursor,
        limit=per_page + 1,
    )
    entries = await deps.ops(request).audit(query)
    more = len(entries) > per_page
    entries = entries[:per_page]
    info: dict[str, Any] = {"count": len(entries), "per_page": per_page}
    if more:
        info["cursor"] = str(entries[-1].seq)
    return ok([entry_dict(e) for e in entries], info)
