"""Repair and resume over REST (a Stepstone extension, not Cloudflare's).

``POST {instance}/stepstone/repair`` with ``{"step": "charge-1", "output": <JSON>,
"resume": true}``, and ``POST {instance}/stepstone/restart`` with ``{"from": {"name": ...,
"count": 1, "type": "do"}, "events": "replay" | "drop"}`` (restart from a step, choosing what
becomes of the events its dropped steps had received). The ``stepstone`` segment is a name no
Cloudflare route uses, so Cloudflare's clients never meet them.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.responses import Response

from stepstone.errors import CannotRestart, StepNotFound
from stepstone.ops import RestartFrom, check_payload_size
from stepstone.repair import RepairRequest, repair
from stepstone.web.api import deps
from stepstone.web.api.routes.operators import request_actor
from stepstone.web.common.envelope import ok

router = APIRouter(tags=["stepstone extensions"])

REPAIR = deps.INSTANCE_PREFIX + "/stepstone/repair"
RESTART = deps.INSTANCE_PREFIX + "/stepstone/restart"


class RepairBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: str = Field(min_length=1, max_length=256, description='as recorded, e.g. "charge-1"')
    output: Any = Field(description="the step's new recorded output (any JSON)")
    resume: StrictBool = False


@router.post(REPAIR, summary="Set a step's recorded output, optionally resume (extension)")
async def repair_step(
    request: Request, account_id: str, workflow_name: str, instance_id: str, body: RepairBody
) -> Response:
    output = orjson.dumps(body.output)
    check_payload_size(output)
    req = RepairRequest(body.step, output, body.resume, request_actor(request))
    where = (
        deps.path(request, "account_id"),
        deps.path(request, "workflow_name"),
        deps.path(request, "instance_id"),
    )
    result = await repair(deps.ops(request), *where, req)
    return ok({"status": result.status, "step": result.step, "previous": result.previous})


class RestartPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    count: int = Field(default=1, ge=1, le=2**31 - 1)
    type: Literal["do", "sleep", "waitForEvent"] = "do"


class RestartBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: RestartPoint = Field(alias="from")
    events: Literal["drop", "replay"] = "drop"


@router.post(RESTART, summary="Restart from a step, replaying or dropping its events (extension)")
async def restart_from(
    request: Request, account_id: str, workflow_name: str, instance_id: str, body: RestartBody
) -> Response:
    point = body.from_
    target = RestartFrom(point.name, point.count, point.type, body.events)
    where = (
        deps.path(request, "account_id"),
        deps.path(request, "workflow_name"),
        deps.path(request, "instance_id"),
    )
    try:
        status = await deps.ops(request).restart(*where, from_=target, actor=request_actor(request))
    except CannotRestart as exc:
        # Under this route a step missing from the history is a missing resource, as it is
        # for repair (Cloudflare's PATCH .../status keeps its 400, 10407).
        raise StepNotFound(exc.detail) from None
    return ok({"status": status, "events": body.events})
