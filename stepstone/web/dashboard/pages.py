"""Pages: sign-in, workflows, a workflow's instances, an instance, a step's output, the stream."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from stepstone import views
from stepstone.errors import InvalidRequest, StepNotFound
from stepstone.model import history as h
from stepstone.model.records import InstanceQuery, WorkflowRecord
from stepstone.model.statuses import ALL_STATUSES, TERMINAL
from stepstone.web.common import sse
from stepstone.web.common.guard import segment
from stepstone.web.common.query import decode_cursor, encode_cursor, parse_date
from stepstone.web.dashboard import charts, present, timeline
from stepstone.web.dashboard.access import Viewer, ViewerDep, state
from stepstone.web.dashboard.app import PREFIX, render
from stepstone.web.dashboard.sessions import COOKIE_PATH, LOGIN_COOKIE

router = APIRouter()
WORKFLOW = PREFIX + "/accounts/{account_id}/workflows/{workflow_name}"
INSTANCE = WORKFLOW + "/instances/{instance_id}"
PER_PAGE = 25
MAX_WORKFLOWS = 500
DAY_MS = 86_400_000


def workflow_url(account_id: str, name: str) -> str:
    return f"{PREFIX}/accounts/{present.seg(account_id)}/workflows/{present.seg(name)}"


def instance_url(account_id: str, name: str, instance_id: str) -> str:
    return f"{workflow_url(account_id, name)}/instances/{present.seg(instance_id)}"


def page(request: Request, who: Viewer, name: str, **context: Any) -> Response:
    context.update(
        viewer=who,
        csrf=who.session.csrf,
        flashes=who.session.take_flashes(),
        can_write=who.can_write,
        workflow_url=workflow_url,
        instance_url=instance_url,
    )
    return render(request, name, context)


def safe_next(value: str | None) -> str:
    """Only a path of this dashboard: never another site, never a scheme-relative URL."""
    if (
        value
        and value.startswith(PREFIX + "/")
        and not value.startswith("//")
        and "\\" not in value
    ):
        return value
    return PREFIX + "/workflows"


# --- sign-in ------------------------------------------------------------------------------------


@router.get(PREFIX)
@router.get(PREFIX + "/")
async def home(request: Request) -> Response:
    return RedirectResponse(PREFIX + "/workflows", status_code=303)


@router.get(PREFIX + "/login")
async def login_page(request: Request, next: str | None = None, expired: int = 0) -> Response:
    error = "Your session ended or your token was revoked; sign in again." if expired else None
    return render_login(request, safe_next(next), error)


def render_login(
    request: Request, next_url: str, error: str | None, status_code: int = 200
) -> Response:
    """The sign-in form, with a fresh double-submit token in its cookie and its form: a form
    posted from another site cannot know the cookie's value."""
    token = secrets.token_urlsafe(32)
    context = {
        "viewer": None,
        "csrf": token,
        "next": next_url,
        "insecure": state(request).insecure_no_auth,
        "error": error,
    }
    response = render(request, "login.html", context, status_code=status_code)
    set_strict_cookie(request, response, LOGIN_COOKIE, token)
    return response


def set_strict_cookie(request: Request, response: Response, name: str, value: str) -> None:
    """A cookie no script can read and no other site can send."""
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=COOKIE_PATH,
    )


# --- workflows ----------------------------------------------------------------------------------


async def _visible_workflows(who: Viewer, request: Request) -> list[WorkflowRecord]:
    ops = state(request).ops
    accounts = who.principal.accounts
    found: list[WorkflowRecord] = []
    for account in [None] if accounts is None else list(accounts):
        records, _ = await ops.workflows(account, None, 0, MAX_WORKFLOWS)
        found.extend(r for r in records if who.may_see(r.account_id))
    return found


@router.get(PREFIX + "/workflows")
async def workflows(request: Request, who: ViewerDep) -> Response:
    ops = state(request).ops
    now = ops.now()
    rows: list[dict[str, Any]] = []
    records = await _visible_workflows(who, request)
    for record in records:
        counts = await ops.instance_counts(record.pk)
        _, versions = await ops.versions(record.pk, 0, 1)
        rows.append(
            {
                "record": record,
                "info": views.workflow(record, counts, now),
                "total": sum(counts.values()),
                "versions": versions,
            }
        )
    accounts = {record.account_id for record in records}
    return page(
        request,
        who,
        "workflows.html",
        rows=rows,
        statuses=ALL_STATUSES,
        show_account=len(accounts) > 1,
    )


# --- instances ----------------------------------------------------------------------------------


def _day(value: str | None, name: str, end: bool) -> int | None:
    ms = parse_date(value, name)
    if ms is not None and end and len((value or "").strip()) == 10:
        # A bare day as the end of a range means the whole of that day.
        ms += DAY_MS - 1
    return ms


@router.get(WORKFLOW)
async def instances(
    request: Request,
    who: ViewerDep,
    account_id: str,
    workflow_name: str,
    status: str | None = Query(None),
    date_from: str | None = Query(None, alias="from"),
    date_to: str | None = Query(None, alias="to"),
    cursor: str | None = Query(None),
    window: str | None = Query(None),
) -> Response:
    ops = state(request).ops
    account, name = segment(account_id), segment(workflow_name)
    workflow = await ops.workflow(account, name)
    status = status or None
    problem = None
    try:
        if status is not None and status not in ALL_STATUSES:
            raise InvalidRequest(f"unknown status {status!r}")
        created_from = _day(date_from, "from", end=False)
        created_to = _day(date_to, "to", end=True)
        after = decode_cursor(cursor)[0] if cursor else None
    except InvalidRequest as exc:
        problem = str(exc)
        created_from = created_to = after = None
        status = None
    query = InstanceQuery(
        status=status,
        created_from=created_from,
        created_to=created_to,
        after=after,
        limit=PER_PAGE,
    )
    records, more = await ops.instance_page(workflow.pk, query)
    next_cursor = None
    if more:
        next_cursor = encode_cursor(records[-1].created_on, records[-1].id, False)
    filters = {"status": status or "", "from": date_from or "", "to": date_to or ""}
    base_query = "&".join(f"{k}={quote(v, safe='')}" for k, v in filters.items() if v)
    counts = await ops.instance_counts(workflow.pk)
    versions, version_total = await ops.versions(workflow.pk, 0, 5)
    retrying = await timeline.retry_notes(ops, records)
    graph = await timeline.recorded_graph(ops, workflow)
    workflow_charts = await charts.build(ops, workflow, window, counts)
    cap = workflow.version.concurrency_limit
    usage = await ops.concurrency_usage(workflow.pk) if cap else None
    # Operator extensions: "act on all N matching" and the Activity panel.
    from stepstone.web.dashboard import operators

    selection = operators.page_filter(status, created_from, created_to)
    matching = await operators.matching(ops, workflow, selection) if not problem else 0
    activity = await operators.activity(ops, account, name)
    return page(
        request,
        who,
        "instances.html",
        concurrency=(cap, *usage) if cap and usage else None,
        workflow=workflow,
        info=views.workflow(workflow, counts, ops.now()),
        versions=versions,
        version_total=version_total,
        records=records,
        statuses=ALL_STATUSES,
        filters=filters,
        problem=problem,
        next_cursor=next_cursor,
        paged=bool(cursor),
        base_query=base_query,
        counts=views.instance_counts(counts),
        retrying=retrying,
        graph=graph,
        charts=workflow_charts,
        matching=matching,
        activity=activity,
    )


# --- one instance -------------------------------------------------------------------------------


@router.get(INSTANCE)
async def instance(
    request: Request,
    who: ViewerDep,
    account_id: str,
    workflow_name: str,
    instance_id: str,
    fragment: int = 0,
) -> Response:
    ops = state(request).ops
    workflow, record = await ops.instance(
        segment(account_id), segment(workflow_name), segment(instance_id)
    )
    events = await ops.events(record)
    history = h.fold(events)
    details = views.instance_details(record, history, simple=True)
    stretches = timeline.pauses(events)
    terminal = record.status in TERMINAL
    now = ops.now()
    steps = present.timeline(
        history,
        ended_on=(record.ended_on or history.ended_at or now) if terminal else None,
        paused=lambda start, end: timeline.paused_within(stretches, start, end),
        now=now,
    )
    context = {
        "workflow": workflow,
        "record": record,
        "details": details,
        "steps": steps,
        "last_event_id": history.last_event_id,
        "terminal": terminal,
        "chart": timeline.chart(record, history, steps, stretches, now),
        "pauses": stretches,
        "retry": timeline.retry_note(history),
        "terminated_by": history.terminated_by,
        "restart_points": [s for s in steps if s.restart_value],
        "waiting_for": [s.event_type for s in steps if s.status == "waiting" and s.event_type],
        "base": instance_url(workflow.account_id, workflow.name, record.id),
    }
    if not fragment:
        from stepstone.web.dashboard import operators

        context["activity"] = await operators.activity(
            ops, workflow.account_id, workflow.name, record.id
        )
        # Child workflows (an extension): the parent and children, each a link.
        context["links"] = await ops.links(record)
    return page(request, who, "live.html" if fragment else "instance.html", **context)


@router.get(INSTANCE + "/events")
async def instance_events(
    request: Request,
    who: ViewerDep,
    account_id: str,
    workflow_name: str,
    instance_id: str,
    cursor: int | None = Query(None, ge=0),
) -> Response:
    ops = state(request).ops
    _, record = await ops.instance(
        segment(account_id), segment(workflow_name), segment(instance_id)
    )
    after = sse.start_after(cursor, request.headers.get("last-event-id"))
    return await sse.sse_response(ops, record, after, None)


@router.get(INSTANCE + "/output")
async def step_output(
    request: Request,
    who: ViewerDep,
    account_id: str,
    workflow_name: str,
    instance_id: str,
    kind: str = Query(),
    name: str = Query(min_length=1, max_length=300),
    download: int = 0,
) -> Response:
    ops = state(request).ops
    workflow, record = await ops.instance(
        segment(account_id), segment(workflow_name), segment(instance_id)
    )
    history = await ops.history(record)
    step = history.steps.get((kind, name))
    if step is None:
        raise StepNotFound(f"no {kind} step named {name!r} in this instance")
    streamed = step.stream is not None and step.success and not step.sensitive
    if download and streamed and step.stream is not None:
        filename = quote(f"{record.id}-{step.name}.bin", safe="")
        return StreamingResponse(
            ops.stream(record.pk, step.name, int(step.stream["chunks"])),
            media_type="application/octet-stream",
            headers={
                "content-length": str(int(step.stream["bytes"])),
                "content-disposition": f"attachment; filename*=UTF-8''{filename}",
                "cache-control": "no-store",
            },
        )
    result: dict[str, Any]
    if kind == h.ROLLBACK:
        result = {"output": views.REDACTED if step.sensitive else _loads(step.output)}
    else:
        result = views.step_result(step, None)
    return page(
        request,
        who,
        "output.html",
        workflow=workflow,
        record=record,
        step=step,
        label=present.KIND_LABELS.get(step.kind, step.kind),
        result=result,
        streamed=streamed,
        stream_bytes=None if step.stream is None else int(step.stream["bytes"]),
        base=instance_url(workflow.account_id, workflow.name, record.id),
    )


def _loads(data: bytes | None) -> Any:
    return None if data is None else orjson.loads(data)
