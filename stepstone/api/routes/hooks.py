"""Lifecycle webhooks over REST (a Stepstone extension, not Cloudflare's).

Under ``{workflow}/stepstone/hooks``, a segment no Cloudflare route uses:

- ``GET    .../stepstone/hooks``                                  the workflow's hooks
- ``POST   .../stepstone/hooks``                                  add one (secret shown once)
- ``DELETE .../stepstone/hooks/{hook_id}``                        remove one
- ``GET    .../stepstone/hooks/deliveries?hook=&state=&limit=``   deliveries with attempts
- ``POST   .../stepstone/hooks/deliveries/{delivery_id}/resend``  send again now
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from stepstone.api import deps
from stepstone.api.envelope import ok
from stepstone.api.routes.operators import request_actor
from stepstone.errors import InvalidRequest
from stepstone.webhooks.service import Hooks, delivery_dict, hook_dict

router = APIRouter(tags=["stepstone extensions"])

HOOKS = deps.WORKFLOW_PREFIX + "/stepstone/hooks"
DELIVERIES = HOOKS + "/deliveries"


def _where(request: Request) -> tuple[str, str]:
    return deps.path(request, "account_id"), deps.path(request, "workflow_name")


@router.get(HOOKS, summary="A workflow's lifecycle webhooks (extension)")
async def list_hooks(request: Request, account_id: str, workflow_name: str) -> Response:
    hooks = await Hooks(deps.ops(request)).hooks(*_where(request))
    return ok([hook_dict(h) for h in hooks])


@router.post(HOOKS, summary="Add a lifecycle webhook (extension)")
async def add_hook(request: Request, account_id: str, workflow_name: str) -> Response:
    try:
        entry = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body is not valid JSON") from None
    hook = await Hooks(deps.ops(request)).add(*_where(request), entry, request_actor(request))
    return ok(hook_dict(hook, reveal=True))


@router.get(DELIVERIES, summary="Webhook deliveries and their attempts, newest first (extension)")
async def list_deliveries(
    request: Request,
    account_id: str,
    workflow_name: str,
    hook: str | None = None,
    state: str | None = None,
    limit: int = Query(50),
) -> Response:
    found = await Hooks(deps.ops(request)).deliveries(
        *_where(request), hook_id=hook, state=state, limit=limit
    )
    return ok([delivery_dict(d) for d in found])


@router.post(DELIVERIES + "/{delivery_id}/resend", summary="Re-send a delivery now (extension)")
async def resend(
    request: Request, account_id: str, workflow_name: str, delivery_id: str
) -> Response:
    await Hooks(deps.ops(request)).resend(
        *_where(request), deps.path(request, "delivery_id"), request_actor(request)
    )
    return ok({"id": deps.path(request, "delivery_id"), "state": "pending"})


@router.delete(HOOKS + "/{hook_id}", summary="Remove a lifecycle webhook (extension)")
async def delete_hook(
    request: Request, account_id: str, workflow_name: str, hook_id: str
) -> Response:
    await Hooks(deps.ops(request)).remove(
        *_where(request), deps.path(request, "hook_id"), request_actor(request)
    )
    return ok({"id": deps.path(request, "hook_id")})
