"""Operator extensions in the dashboard: "act on all N matching" (a bulk job over the
instances page's filter), the job's progress page, and the Activity panel (the audit log of a
workflow or an instance). Every action here is recorded as the session's token."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from stepstone.audit import entry_dict
from stepstone.bulk import BulkService, job_dict, make_spec
from stepstone.errors import InvalidRequest
from stepstone.model.actors import DASHBOARD, Actor
from stepstone.model.ops_records import AuditQuery, InstanceFilter
from stepstone.model.records import WorkflowRecord
from stepstone.ops import Operations
from stepstone.web.common.auth import NOBODY_NEEDED
from stepstone.web.common.guard import segment
from stepstone.web.dashboard.access import Viewer, ViewerDep, state
from stepstone.web.dashboard.app import PREFIX

router = APIRouter()

WORKFLOW = PREFIX + "/accounts/{account_id}/workflows/{workflow_name}"
JOB = PREFIX + "/accounts/{account_id}/bulk/{job_id}"
ACTIVITY_ROWS = 15
DASHBOARD_ACTIONS = ("pause", "resume", "terminate", "restart", "retry_errored", "delete")
REASON_ROWS = 200


def viewer_actor(who: Viewer) -> Actor:
    principal = who.principal
    if principal is NOBODY_NEEDED:
        return Actor(DASHBOARD, principal.name)
    return Actor(DASHBOARD, principal.name, principal.id)


def job_url(account_id: str, job_id: str) -> str:
    from stepstone.web.dashboard import present

    return f"{PREFIX}/accounts/{present.seg(account_id)}/bulk/{present.seg(job_id)}"


async def activity(
    ops: Operations, account_id: str, workflow_name: str, instance_id: str | None = None
) -> list[dict[str, Any]]:
    """The newest audit entries of a workflow or one instance, for the Activity panel."""
    query = AuditQuery(
        account_id, workflow_name=workflow_name, instance_id=instance_id, limit=ACTIVITY_ROWS
    )
    rows = []
    for item in await ops.audit(query):
        row = entry_dict(item)
        row["at_ms"] = item.at
        error = row["detail"].get("error")
        row["error"] = f"{error.get('code')}: {error.get('message')}" if error else None
        rows.append(row)
    return rows


def page_filter(
    status: str | None, created_from: int | None, created_to: int | None
) -> InstanceFilter:
    """The instances page's filter as a bulk selection (its "to" day is inclusive)."""
    return InstanceFilter(
        statuses=(status,) if status else (),
        created_after=created_from,
        created_before=None if created_to is None else created_to + 1,
    )


async def matching(ops: Operations, workflow: WorkflowRecord, where: InstanceFilter) -> int:
    return await ops.count_selected(workflow.pk, where)


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


@router.post(WORKFLOW + "/bulk-all")
async def bulk_all(
    request: Request, who: ViewerDep, account_id: str, workflow_name: str
) -> Response:
    from stepstone.web.dashboard.pages import _day, page, workflow_url

    ops = state(request).ops
    account, name = segment(account_id), segment(workflow_name)
    workflow = await ops.workflow(account, name)
    form = await request.form()
    action = _text(form, "action")
    if action not in DASHBOARD_ACTIONS:
        raise InvalidRequest(f"action must be one of {', '.join(DASHBOARD_ACTIONS)}")
    status = _text(form, "status") or None
    date_from, date_to = _text(form, "from"), _text(form, "to")
    where = page_filter(status, _day(date_from, "from", False), _day(date_to, "to", True))
    spec = make_spec(
        action,
        statuses=where.statuses,
        created_after=where.created_after,
        created_before=where.created_before,
        rollback=_text(form, "rollback") == "yes" and action == "terminate",
    )
    service = BulkService(ops)
    if _text(form, "confirm") != "yes":
        preview = await service.dry_run(account, name, spec)
        return page(
            request,
            who,
            "bulk_all_confirm.html",
            workflow=workflow,
            action=action,
            matched=preview.matched,
            sample=preview.first_page[:10],
            filters={"status": status or "", "from": date_from, "to": date_to},
            rollback=spec.rollback,
            back=workflow_url(account, name),
        )
    job = await service.start(account, name, spec, viewer_actor(who))
    who.session.flash("ok", f"Bulk {action} started on {job.matched} instances.")
    return Response(status_code=303, headers={"location": job_url(account, job.id)})


@router.get(JOB)
async def bulk_job(request: Request, who: ViewerDep, account_id: str, job_id: str) -> Response:
    from stepstone.web.dashboard.pages import page, workflow_url

    ops = state(request).ops
    service = BulkService(ops)
    job = await service.get(segment(account_id), segment(job_id))
    reasons: dict[str, list[tuple[str, int]]] = {}
    for outcome in ("failed", "skipped"):
        if getattr(job, outcome):
            counts: dict[str, int] = {}
            for item in await ops.bulk_items(job.id, outcome, None, REASON_ROWS):
                counts[item.reason or ""] = counts.get(item.reason or "", 0) + 1
            reasons[outcome] = sorted(counts.items(), key=lambda kv: -kv[1])
    info = job_dict(job)
    total = max(info["matched"], info["processed"], 1)
    return page(
        request,
        who,
        "bulk_job.html",
        job=info,
        percent=min(100, round(100 * info["processed"] / total)),
        reasons=reasons,
        running=job.status in ("queued", "running"),
        actor=orjson.loads(job.actor),
        url=job_url(job.account_id, job.id),
        workflow_link=workflow_url(job.account_id, job.workflow_name),
    )


@router.post(JOB + "/cancel")
async def cancel_job(request: Request, who: ViewerDep, account_id: str, job_id: str) -> Response:
    ops = state(request).ops
    account = segment(account_id)
    job = await BulkService(ops).cancel(account, segment(job_id), viewer_actor(who))
    who.session.flash("ok", f"Bulk job {job.id[:8]} is {job.status}.")
    return Response(status_code=303, headers={"location": job_url(account, job.id)})
