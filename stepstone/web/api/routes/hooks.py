"""Lifecycle webhooks over REST (a Stepstone extension, not Cloudflare's).

Under ``{workflow}/stepstone/hooks``, a segment no Cloudflare route uses:

- ``GET    .../stepstone/hooks``                                  the workflow's hooks
- ``POST   .../stepstone/hooks``                                  add one (secret shown once)
- ``DELETE .../stepstone/hooks/{hook_id}``                        remove one
- ``GET    .../stepstone/hooks/deliveries?hook=&state=&limit=``   deliveries with attempts
- ``POST   .../stepstone/hooks/deliveries/{delivery_id}/resend``  send again now
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from stepstone.model.webhooks import EVENTS
from stepstone.web.api import deps
from stepstone.web.api.no_nul import NO_NUL
from stepstone.web.api.routes.operators import request_actor
from stepstone.web.common.envelope import ok
from stepstone.webhooks.service import MAX_LIST, Hooks, delivery_dict, hook_dict

router = APIRouter(tags=["stepstone extensions"])

HOOKS = deps.WORKFLOW_PREFIX + "/stepstone/hooks"
DELIVERIES = HOOKS + "/deliveries"


Event = Literal["errored", "complete", "terminated", "paused", "rolledBack", "waitingForEvent"]
assert set(Event.__args__) == set(EVENTS)  # type: ignore[attr-defined]
# What parse_hook accepts, said precisely enough that a schema-valid body is never refused.
URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$"
DURATION_PATTERN = r"^[1-9][0-9]{0,8}( ?(ms|milliseconds?|seconds?|minutes?|hours?|days?|weeks?))?$"


class HookBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=URL_PATTERN, max_length=2048)
    events: list[Event] = Field(min_length=1, max_length=len(EVENTS))
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        pattern=NO_NUL,
        description="default: generated",
    )
    waitForEventLongerThan: int | str | None = Field(
        default=None,
        description='for waitingForEvent (default 1 hour): milliseconds or e.g. "4 hours"',
        json_schema_extra={
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 10**12},
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "null"},
            ]
        },
    )


def _where(request: Request) -> tuple[str, str]:
    return deps.path(request, "account_id"), deps.path(request, "workflow_name")


@router.get(HOOKS, summary="A workflow's lifecycle webhooks (extension)")
async def list_hooks(request: Request, account_id: str, workflow_name: str) -> Response:
    hooks = await Hooks(deps.ops(request)).hooks(*_where(request))
    return ok([hook_dict(h) for h in hooks])


@router.post(HOOKS, summary="Add a lifecycle webhook (extension)")
async def add_hook(
    request: Request, account_id: str, workflow_name: str, body: HookBody
) -> Response:
    entry = body.model_dump(exclude_none=True)
    hook = await Hooks(deps.ops(request)).add(*_where(request), entry, request_actor(request))
    return ok(hook_dict(hook, reveal=True))


@router.get(DELIVERIES, summary="Webhook deliveries and their attempts, newest first (extension)")
async def list_deliveries(
    request: Request,
    account_id: str,
    workflow_name: str,
    hook: str | None = Query(None, min_length=1, max_length=100),
    state: Literal["pending", "delivered", "failed"] | None = None,
    limit: int = Query(50, ge=1, le=MAX_LIST),
) -> Response:
    found = await Hooks(deps.ops(request)).deliveries(
        *_where(request), hook_id=hook, state=state, limit=limit
    )
    return ok([delivery_dict(d) for d in found])


@router.post(DELIVERIES + "/{delivery_id}/resend", summary="Re-send a delivery now (extension)")
async def resend(
    request: Request,
    account_id: str,
    workflow_name: str,
    delivery_id: str = Path(pattern=r"^whd_[0-9]{1,18}$"),
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
