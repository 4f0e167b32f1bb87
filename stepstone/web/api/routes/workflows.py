"""Workflows: list, get, PUT (a new version each time), delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from stepstone import views
from stepstone.model.records import WorkflowRecord
from stepstone.web.api import answers as a
from stepstone.web.api import deps
from stepstone.web.api.answers import doc
from stepstone.web.api.schemas import WorkflowPut
from stepstone.web.common.envelope import ok, page_info
from stepstone.web.common.query import MAX_PAGE

router = APIRouter(tags=["workflows"])


@router.get(
    deps.ACCOUNT_PREFIX + "/workflows", summary="List workflows", responses=doc(list[a.WorkflowOut])
)
async def list_workflows(
    request: Request,
    account_id: str,
    page: int = Query(1, ge=1, le=MAX_PAGE),
    per_page: int = Query(10, ge=1, le=100),
    search: str | None = Query(None, min_length=1, max_length=64, description="substring"),
) -> Response:
    ops = deps.ops(request)
    account = deps.path(request, "account_id")
    records, total = await ops.workflows(account, search, (page - 1) * per_page, per_page)
    now = ops.now()
    result = [
        _jurisdiction(views.workflow(r, await ops.instance_counts(r.pk), now), r) for r in records
    ]
    return ok(result, page_info(len(result), per_page, total, page))


@router.get(deps.WORKFLOW_PREFIX, summary="Get a workflow", responses=doc(a.WorkflowOut))
async def get_workflow(request: Request, account_id: str, workflow_name: str) -> Response:
    ops = deps.ops(request)
    record = await ops.workflow(
        deps.path(request, "account_id"), deps.path(request, "workflow_name")
    )
    counts = await ops.instance_counts(record.pk)
    answer = _jurisdiction(views.workflow(record, counts, ops.now()), record)
    limit = record.version.concurrency_limit
    if limit is not None:
        # Stepstone's addition, only on a capped workflow (Cloudflare's answer has no such
        # field, and its clients ignore it): what the CLI and dashboard show.
        running, waiting = await ops.concurrency_usage(record.pk)
        answer["concurrency"] = {"limit": limit, "running": running, "queued": waiting}
    return ok(answer)


@router.put(
    deps.WORKFLOW_PREFIX,
    summary="Create or update a workflow (adds a version)",
    responses=doc(a.WorkflowPutOut),
)
async def put_workflow(
    request: Request, account_id: str, workflow_name: str, body: WorkflowPut
) -> Response:
    retention = body.default_retention
    record = await deps.ops(request).put_workflow(
        deps.path(request, "account_id"),
        deps.path(request, "workflow_name"),
        class_name=body.class_name,
        script_name=body.script_name,
        limits_steps=body.limits.steps if body.limits else None,
        success_retention=retention.success_retention if retention else None,
        error_retention=retention.error_retention if retention else None,
        schedules=[s.cron for s in body.schedules or ()],
        concurrency_limit=body.concurrency.limit if body.concurrency else None,
        jurisdiction=body.jurisdiction,
    )
    return ok(_jurisdiction(views.workflow_put(record), record))


def _jurisdiction(answer: dict[str, Any], record: WorkflowRecord) -> dict[str, Any]:
    """A workflow's answer names its jurisdiction once it has one, as wrangler's
    ``workflows describe`` reads it (and compares it before a deploy)."""
    if record.jurisdiction is not None:
        answer["jurisdiction"] = record.jurisdiction
    return answer


@router.delete(
    deps.WORKFLOW_PREFIX,
    summary="Delete a workflow and its instances",
    responses=doc(a.WorkflowDeleted),
)
async def delete_workflow(request: Request, account_id: str, workflow_name: str) -> Response:
    await deps.ops(request).delete_workflow(
        deps.path(request, "account_id"), deps.path(request, "workflow_name")
    )
    return ok({"status": "ok", "success": True})
