"""Instances: list, create, batch create/delete/terminate, terminate-all, details, the step
endpoint, status changes, events, delete."""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response, StreamingResponse

from stepstone import views
from stepstone.errors import (
    CannotTerminate,
    InstanceNotFound,
    InvalidParams,
    InvalidRequest,
    StepNotFound,
    StepOutputCorrupt,
    StepstoneError,
)
from stepstone.model import history as h
from stepstone.model.records import InstanceQuery
from stepstone.model.statuses import ALL_STATUSES
from stepstone.ops import (
    MAX_BATCH,
    CreateRequest,
    Operations,
    RestartFrom,
    check_payload_size,
    retention_ms,
)
from stepstone.web.api import answers as a
from stepstone.web.api import deps
from stepstone.web.api.answers import doc
from stepstone.web.api.routes.operators import request_actor
from stepstone.web.api.schemas import (
    BatchCount,
    BatchDelete,
    BatchInstances,
    InstanceCreate,
    StatusChange,
)
from stepstone.web.common.envelope import ok
from stepstone.web.common.query import MAX_PAGE, decode_cursor, encode_cursor, parse_date

router = APIRouter(tags=["instances"])
INSTANCES = deps.WORKFLOW_PREFIX + "/instances"
INSTANCE = deps.INSTANCE_PREFIX
STEP_NAME_MAX = 300
JSON_ANY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"description": "any JSON value"}}},
    }
}


def _where(request: Request) -> tuple[str, str]:
    return deps.path(request, "account_id"), deps.path(request, "workflow_name")


def _now_iso(request: Request) -> str | None:
    return views.iso(deps.ops(request).now())


# --- list and create ----------------------------------------------------------------------


async def _list(
    request: Request,
    status: str | None,
    date_start: str | None,
    date_end: str | None,
    cursor: str | None,
    direction: str | None,
    per_page: int,
    page: int | None,
) -> Response:
    if status is not None and status not in ALL_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(ALL_STATUSES)}; got {status!r}")
    ops = deps.ops(request)
    workflow = await ops.workflow(*_where(request))
    created_from = parse_date(date_start, "date_start")
    created_to = parse_date(date_end, "date_end")
    counts = await ops.instance_counts(workflow.pk)
    total = counts.get(status, 0) if status else sum(counts.values())
    info: dict[str, Any] = {"per_page": per_page, "total_count": total}
    ascending = direction == "asc"
    after: tuple[int, str] | None = None
    offset = 0
    if cursor:
        after, cursor_ascending = decode_cursor(cursor)
        ascending = cursor_ascending if direction is None else ascending
        if page is not None and page > 1:
            # The SDK's pager keeps the cursor and adds page=2, 3... until a page is empty: page
            # N is the N-th page after the cursor, so iterating from a cursor reaches the end.
            offset = (page - 1) * per_page
            info["page"] = page
    elif page is not None:
        offset = (page - 1) * per_page
        info["page"] = page
    query = InstanceQuery(
        status=status,
        created_from=created_from,
        created_to=created_to,
        after=after,
        ascending=ascending,
        offset=offset,
        limit=per_page,
    )
    records, more = await ops.instance_page(workflow.pk, query)
    info["count"] = len(records)
    if more:
        last = records[-1]
        info["cursor"] = encode_cursor(last.created_on, last.id, ascending)
    return ok([views.instance_item(r, workflow) for r in records], info)


@router.get(
    INSTANCES, summary="List instances (cursor or page)", responses=doc(list[a.InstanceOut])
)
@router.get(INSTANCES + "/", include_in_schema=False)
async def list_instances(
    request: Request,
    account_id: str,
    workflow_name: str,
    status: str | None = Query(None, description="one of the instance statuses"),
    date_start: str | None = Query(None, description="ISO-8601; created at or after"),
    date_end: str | None = Query(None, description="ISO-8601; created at or before"),
    cursor: str | None = Query(None, description="result_info.cursor of the previous page"),
    direction: Literal["asc", "desc"] | None = Query(None),
    per_page: int = Query(50, ge=1, le=100),
    page: int | None = Query(
        None, ge=1, le=MAX_PAGE, description="deprecated; with a cursor, the page-th page after it"
    ),
) -> Response:
    return await _list(request, status, date_start, date_end, cursor, direction, per_page, page)


def _create_request(body: InstanceCreate) -> CreateRequest:
    params = body.params
    if isinstance(params, str):
        # Typed SDK callers send a JSON-encoded string; a string that is not JSON is the value.
        with contextlib.suppress(orjson.JSONDecodeError):
            params = orjson.loads(params)
    try:
        encoded = orjson.dumps(params)
    except TypeError as exc:  # pragma: no cover - parsed JSON always encodes
        raise InvalidParams(str(exc)) from None
    check_payload_size(encoded)
    retention = body.instance_retention
    return CreateRequest(
        id=body.instance_id,
        params=encoded,
        success_retention_ms=retention_ms(
            retention.success_retention if retention else None, "success_retention"
        ),
        error_retention_ms=retention_ms(
            retention.error_retention if retention else None, "error_retention"
        ),
    )


@router.post(INSTANCES, summary="Create an instance", responses=doc(a.InstanceCreatedOut))
async def create_instance(
    request: Request,
    account_id: str,
    workflow_name: str,
    body: InstanceCreate | None = None,
) -> Response:
    return await create_answer(
        deps.ops(request), *_where(request), body or InstanceCreate.model_validate({})
    )


async def create_answer(
    ops: Operations, account_id: str, workflow_name: str, body: InstanceCreate
) -> Response:
    """POST instances, its body already validated (shared with ``stepstone.web.api.hot``)."""
    workflow, records = await ops.create_instances(
        account_id, workflow_name, [_create_request(body)], skip_existing=False
    )
    return ok(views.instance_created(records[0], workflow))


class BatchCreateError(BaseModel):
    index: int
    id: str | None
    code: int
    message: str


class BatchCreateOut(BaseModel):
    created: list[a.InstanceCreatedOut]
    errors: list[BatchCreateError]


@router.post(
    INSTANCES + "/batch",
    summary="Create up to 100 instances: an array (existing ids skipped), or {count} / "
    "{instances} (each entry created or reported in errors)",
    responses=doc(list[a.InstanceCreatedOut] | BatchCreateOut),
)
async def create_batch(
    request: Request,
    account_id: str,
    workflow_name: str,
    body: list[InstanceCreate] | BatchCount | BatchInstances,
) -> Response:
    if not isinstance(body, list):
        return await _create_batch_object(request, body)
    if not 1 <= len(body) <= MAX_BATCH:
        raise InvalidRequest(f"a batch has 1 to {MAX_BATCH} instances; got {len(body)}")
    workflow, records = await deps.ops(request).create_instances(
        *_where(request), [_create_request(item) for item in body], skip_existing=True
    )
    result = [views.instance_created(r, workflow) for r in records]
    return ok(result, {"count": len(result), "per_page": len(result), "total_count": len(result)})


def _batch_entries(
    body: BatchCount | BatchInstances,
) -> list[CreateRequest | tuple[str | None, StepstoneError]]:
    """The object form's entries, each parsed on its own so a bad one is only reported."""
    if isinstance(body, BatchCount):
        shared = InstanceCreate.model_validate(
            {"params": body.params, "instance_retention": body.retention or body.instance_retention}
        )
        return [_create_request(shared)] * body.count
    entries: list[CreateRequest | tuple[str | None, StepstoneError]] = []
    for item in body.instances:
        try:
            if item.id is not None and item.instance_id is not None:
                raise InvalidRequest("an entry has id or instance_id, not both")
            merged = InstanceCreate.model_validate(
                {
                    "instance_id": item.instance_id if item.id is None else item.id,
                    "params": item.params,
                    "instance_retention": item.instance_retention or item.retention,
                }
            )
            entries.append(_create_request(merged))
        except StepstoneError as exc:
            entries.append((item.instance_id if item.id is None else item.id, exc))
    return entries


async def _create_batch_object(request: Request, body: BatchCount | BatchInstances) -> Response:
    workflow, records, errors = await deps.ops(request).create_batch(
        *_where(request), _batch_entries(body)
    )
    return ok(
        {
            "created": [views.instance_created(r, workflow) for r in records],
            "errors": [e.as_dict() for e in errors],
        }
    )


@router.post(
    INSTANCES + "/batch/delete",
    summary="Delete up to 100 instances",
    responses=doc(a.BatchDeleteOut),
)
async def delete_batch(
    request: Request, account_id: str, workflow_name: str, body: BatchDelete
) -> Response:
    existed = set(
        await deps.ops(request).delete_instances(
            *_where(request), body.instances, actor=request_actor(request)
        )
    )
    missing = InstanceNotFound()
    return ok(
        {
            "deleted": [{"id": i} for i in body.instances if i in existed],
            "errors": [
                {"id": i, "code": missing.code, "message": missing.message}
                for i in body.instances
                if i not in existed
            ],
        }
    )


@router.post(
    INSTANCES + "/batch/terminate",
    summary="Terminate up to 100 instances",
    responses=doc(a.BatchTerminateOut),
)
async def terminate_batch(
    request: Request, account_id: str, workflow_name: str, body: list[str]
) -> Response:
    if not 1 <= len(body) <= MAX_BATCH:
        raise InvalidRequest(f"a batch has 1 to {MAX_BATCH} instance ids; got {len(body)}")
    ops = deps.ops(request)
    account, name = _where(request)
    await ops.workflow(account, name)
    terminated = 0
    for instance_id in dict.fromkeys(body):
        try:
            await ops.terminate(account, name, instance_id, actor=request_actor(request))
        except (CannotTerminate, InstanceNotFound):
            continue
        terminated += 1
    return ok({"instancesTerminated": terminated, "status": "ok"})


@router.put(
    INSTANCES + "/terminate",
    summary="Terminate all instances (background job)",
    responses=doc(a.JobStarted),
)
async def terminate_all(
    request: Request,
    account_id: str,
    workflow_name: str,
    status: Literal["queued", "running", "paused", "waitingForPause", "waiting"] | None = None,
) -> Response:
    ops = deps.ops(request)
    account, name = _where(request)
    await ops.workflow(account, name)
    started = request.app.state.terminate_jobs.start(
        ops, account, name, status, request_actor(request)
    )
    return ok({"status": "ok" if started else "already_running"})


@router.get(
    INSTANCES + "/terminate",
    summary="Whether a terminate-all job is running",
    responses=doc(a.JobState),
)
async def terminate_all_status(request: Request, account_id: str, workflow_name: str) -> Response:
    account, name = _where(request)
    await deps.ops(request).workflow(account, name)
    running = request.app.state.terminate_jobs.running(account, name)
    return ok({"status": "running" if running else "not_running"})


# --- one instance ---------------------------------------------------------------------------


@router.get(INSTANCE, summary="Instance details: metadata and steps", responses=doc(a.DetailsOut))
async def get_instance(
    request: Request,
    account_id: str,
    workflow_name: str,
    instance_id: str,
    order: Literal["asc", "desc"] = "asc",
    simple: Literal["true", "false"] = "false",
) -> Response:
    where = (*_where(request), deps.path(request, "instance_id"))
    return await instance_answer(deps.ops(request), *where, order=order, simple=simple == "true")


async def instance_answer(
    ops: Operations,
    account_id: str,
    workflow_name: str,
    instance_id: str,
    *,
    order: str,
    simple: bool,
) -> Response:
    """GET instance, its parameters already checked (shared with ``stepstone.web.api.hot``)."""
    if simple:
        # What pollers ask for (the SDK's status(), the Workers shim): from the row and an
        # indexed summary, so a poll costs the same at 1 step as at 10,000.
        record, summary = await ops.instance_summary(account_id, workflow_name, instance_id)
        return ok(views.instance_summary(record, summary))
    _, record = await ops.instance(account_id, workflow_name, instance_id)
    history = await ops.history(record)
    details = views.instance_details(record, history, order=order, simple=simple)
    if not simple:
        # Child workflows (an extension): a namespaced key, only on instances that have links.
        details.update(views.links_fields(await ops.links(record)))
    return ok(details)


@router.get(
    INSTANCE + "/step",
    summary="A step's full output; application/octet-stream for a byte-stream step",
    responses={
        200: {
            "model": a.Envelope[a.StepOut],
            "content": {"application/octet-stream": {}},
        },
        "4XX": {"model": a.Envelope[None], "description": "error envelope"},
    },
)
async def get_step(
    request: Request,
    account_id: str,
    workflow_name: str,
    instance_id: str,
    name: str = Query(
        min_length=1, max_length=STEP_NAME_MAX, description="visible name, e.g. fetch-1"
    ),
    type: Literal["step", "waitForEvent"] = Query(),
    attempt: int | None = Query(None, ge=1),
) -> Response:
    where = (*_where(request), deps.path(request, "instance_id"))
    return await step_answer(deps.ops(request), *where, name=name, kind=type, attempt=attempt)


async def step_answer(
    ops: Operations,
    account_id: str,
    workflow_name: str,
    instance_id: str,
    *,
    name: str,
    kind: str,
    attempt: int | None,
) -> Response:
    """GET step, its parameters already checked (shared with ``stepstone.web.api.hot``)."""
    _, record = await ops.instance(account_id, workflow_name, instance_id)
    # Only the events of the steps with this name: one index range, whatever the history holds.
    history = await ops.step_history(record, name)
    step = history.steps.get((h.DO if kind == "step" else h.WAIT, name))
    if step is None:
        raise StepNotFound(
            f"no {kind} named {name!r} in this instance's history"
            + _other_kind(history, kind, name)
        )
    chosen = None
    if attempt is not None and step.kind == h.DO:
        chosen = next((a for a in step.attempts if a.attempt == attempt), None)
        if chosen is None:
            raise StepNotFound(f"step {name!r} has no attempt {attempt}")
    streamed = step.stream is not None and step.success and not step.sensitive
    if streamed and (chosen is None or chosen.success) and step.stream is not None:
        stream = step.stream
        await _check_stream(ops, record.pk, step.name, int(stream["chunks"]), int(stream["bytes"]))
        return StreamingResponse(
            ops.stream(record.pk, step.name, int(stream["chunks"])),
            media_type="application/octet-stream",
            headers={"content-length": str(int(stream["bytes"]))},
        )
    return ok(views.step_result(step, chosen, spliced=True))


async def _check_stream(
    ops: Operations, instance_pk: int, step_name: str, chunks: int, size: int
) -> None:
    """Refuse a byte-stream output whose stored chunks are not all there (miniflare:
    instance.step_output_corrupt) before any byte is sent: once the 200 has gone, a missing
    chunk could only cut the body short. One extra pass over the chunks, none kept."""
    seen = total = 0
    try:
        async for chunk in ops.stream(instance_pk, step_name, chunks):
            seen += 1
            total += len(chunk)
    except RuntimeError:
        pass
    if seen != chunks or total != size:
        raise StepOutputCorrupt(f"Stored output for {step_name} is corrupt or incomplete.")


@router.patch(
    INSTANCE + "/status",
    summary="Pause, resume, terminate or restart",
    responses=doc(a.StatusOut),
)
async def change_status(
    request: Request, account_id: str, workflow_name: str, instance_id: str, body: StatusChange
) -> Response:
    ops = deps.ops(request)
    where = (*_where(request), deps.path(request, "instance_id"))
    if body.rollback is not None and body.status != "terminate":
        raise InvalidRequest("rollback goes only with status terminate")
    if body.from_ is not None and body.status != "restart":
        raise InvalidRequest("from goes only with status restart")
    actor = request_actor(request)
    if body.status == "pause":
        status = await ops.pause(*where, actor=actor)
    elif body.status == "resume":
        status = await ops.resume(*where, actor=actor)
    elif body.status == "terminate":
        status = await ops.terminate(*where, rollback=bool(body.rollback), actor=actor)
    else:
        target = body.from_
        restart_from = (
            None if target is None else RestartFrom(target.name, target.count, target.type)
        )
        status = await ops.restart(*where, from_=restart_from, actor=actor)
    return ok({"status": status, "timestamp": _now_iso(request)})


@router.post(
    INSTANCE + "/events/{event_type}",
    summary="Send an event",
    openapi_extra=JSON_ANY,
    responses=doc(a.InstanceStamp),
)
async def send_event(
    request: Request, account_id: str, workflow_name: str, instance_id: str, event_type: str
) -> Response:
    raw = await request.body()
    try:
        payload = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        raise InvalidRequest("the event body is not valid JSON") from None
    instance = deps.path(request, "instance_id")
    when = await deps.ops(request).send_event(
        *_where(request),
        instance,
        deps.path(request, "event_type"),
        orjson.dumps(payload),
        actor=request_actor(request),
    )
    return ok({"instanceId": instance, "timestamp": views.iso(when)})


@router.delete(
    INSTANCE, summary="Delete an instance and all its data", responses=doc(a.InstanceStamp)
)
async def delete_instance(
    request: Request, account_id: str, workflow_name: str, instance_id: str
) -> Response:
    instance = deps.path(request, "instance_id")
    existed = await deps.ops(request).delete_instances(
        *_where(request), [instance], actor=request_actor(request)
    )
    if not existed:
        raise InstanceNotFound(f"Instance {instance!r} not found")
    return ok({"instanceId": instance, "timestamp": _now_iso(request)})


def _other_kind(history: h.InstanceHistory, kind: str, name: str) -> str:
    """A hint for a step asked for with the wrong ``type`` (do and waitForEvent count apart)."""
    other, other_type = (h.WAIT, "waitForEvent") if kind == "step" else (h.DO, "step")
    if (other, name) in history.steps:
        return f"; {name!r} is a {other_type}: ask with type={other_type}"
    if (h.SLEEP, name) in history.steps:
        return f"; {name!r} is a sleep, which has no output"
    return ""
