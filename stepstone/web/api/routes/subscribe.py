"""``GET .../instances/{id}/subscribe`` and its token: the API's door to the event stream of
``stepstone.web.common.sse``."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from stepstone import views
from stepstone.web.api import deps
from stepstone.web.common import subscribe_token
from stepstone.web.common.envelope import ok
from stepstone.web.common.sse import parse_filter, sse_response, start_after

router = APIRouter(tags=["instances"])


@router.get(
    deps.INSTANCE_PREFIX + "/subscribe",
    summary="Stream the instance's events (history, then live) as Server-Sent Events",
    responses={200: {"content": {"text/event-stream": {}}}, 204: {"description": "ended"}},
)
async def subscribe(
    request: Request,
    account_id: str,
    workflow_name: str,
    instance_id: str,
    cursor: int | None = Query(None, ge=0, description="last eventId seen; resume after it"),
    filter: str | None = Query(None, description="comma-separated event types to deliver"),
    # Read by the Guard, which authenticates with it; declared so the OpenAPI document says so.
    token: str | None = Query(
        None, description="a subscribe token (from …/subscribe/token) instead of an API token"
    ),
) -> Response:
    types = parse_filter(filter)
    ops = deps.ops(request)
    _, record = await ops.instance(
        deps.path(request, "account_id"),
        deps.path(request, "workflow_name"),
        deps.path(request, "instance_id"),
    )
    after = start_after(cursor, request.headers.get("last-event-id"))
    return await sse_response(ops, record, after, types)


@router.get(
    deps.INSTANCE_PREFIX + "/subscribe/token",
    summary="Mint a short-lived token that opens this instance's event stream (?token=)",
)
async def subscribe_token_for(
    request: Request, account_id: str, workflow_name: str, instance_id: str
) -> Response:
    ops = deps.ops(request)
    account, workflow = deps.path(request, "account_id"), deps.path(request, "workflow_name")
    _, record = await ops.instance(account, workflow, deps.path(request, "instance_id"))
    token, expires = await subscribe_token.mint(ops, account, workflow, record.id, ops.now())
    return ok(
        {
            "token": token,
            "expires_on": views.iso(expires),
            "url": f"{request.url.path.removesuffix('/token')}?{subscribe_token.QUERY_KEY}={token}",
        }
    )
