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

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.responses import Response

from stepstone import views
from stepstone.api import deps
from stepstone.api.auth import NOBODY_NEEDED, Principal
from stepstone.api.envelope import ok
from stepstone.api.query import parse_date
from stepstone.audit import ANONYMOUS, TOKEN, Actor, entry_dict
from stepstone.bulk import ACTIONS, BulkService, job_dict, make_spec
from stepstone.errors import InvalidRequest
from stepstone.storage.ops_records import ITEM_OUTCOMES, AuditQuery

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


class BulkFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: list[str] = Field(default_factory=list, max_length=9)
    created_after: str | None = Field(default=None, description="ISO-8601; inclusive")
    created_before: str | None = Field(default=None, description="ISO-8601; exclusive")
    id_prefix: str | None = None
    error_name: str | None = Field(default=None, description="the error's name")


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(description=" | ".join(ACTIONS))
    filter: BulkFilter | None = None
    rollback: StrictBool = Field(default=False, description="terminate only")
    from_step: str | None = Field(
        default=None, description="restart only: the step to restart from"
    )
    dry_run: StrictBool = False


@router.post(BULK, summary="Bulk action on a filter: dry run or start a job (extension)")
async def start_bulk(
    request: Request, account_id: str, workflow_name: str, body: BulkRequest
) -> Response:
    account, name = deps.path(request, "account_id"), deps.path(request, "workflow_name")
    where = body.filter or BulkFilter()
    spec = make_spec(
        body.action,
        statuses=where.status,
        created_after=parse_date(where.created_after, "filter.created_after"),
        created_before=parse_date(where.created_before, "filter.created_before"),
        id_prefix=where.id_prefix,
        error_name=where.error_name,
        rollback=body.rollback,
        from_step=body.from_step,
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
    jobs = await deps.engine(request).storage.list_bulk_jobs(account, name, per_page)
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
    outcome: str | None = None,
    cursor: str | None = None,
    per_page: int = Query(100, ge=1, le=MAX_PER_PAGE),
) -> Response:
    if outcome is not None and outcome not in ITEM_OUTCOMES:
        raise InvalidRequest(f"outcome must be one of {', '.join(ITEM_OUTCOMES)}")
    service = BulkService(deps.ops(request))
    job = await service.get(deps.path(request, "account_id"), deps.path(request, "job_id"))
    items = await service.storage.list_bulk_items(job.id, outcome, cursor, per_page + 1)
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
    since: str | None = None,
    until: str | None = None,
    action: Annotated[list[str] | None, Query()] = None,
    actor: str | None = None,
    bulk_job: str | None = None,
    cursor: str | None = None,
    per_page: int = Query(50, ge=1, le=MAX_PER_PAGE),
) -> Response:
    before = None
    if cursor is not None:
        if not cursor.isdigit():
            raise InvalidRequest("cursor must be the result_info.cursor of a previous page")
        before = int(cursor)
    query = AuditQuery(
        account_id=deps.path(request, "account_id"),
        workflow_name=workflow,
        instance_id=instance,
        since=parse_date(since, "since"),
        until=parse_date(until, "until"),
        actions=tuple(action or ()),
        actor=actor,
        bulk_job_id=bulk_job,
        before=before,
        limit=per_page + 1,
    )
    entries = await deps.engine(request).storage.list_audit(query)
    more = len(entries) > per_page
    entries = entries[:per_page]
    info: dict[str, Any] = {"count": len(entries), "per_page": per_page}
    if more:
        info["cursor"] = str(entries[-1].seq)
    return ok([entry_dict(e) for e in entries], info)
