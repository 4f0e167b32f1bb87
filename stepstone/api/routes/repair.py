"""Repair and resume over REST (a Stepstone extension, not Cloudflare's).

``POST {instance}/stepstone/repair`` with ``{"step": "charge-1", "output": <JSON>,
"resume": true}``: the ``stepstone`` segment is a name no Cloudflare route uses, so
Cloudflare's clients never meet it.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.responses import Response

from stepstone.api import deps
from stepstone.api.envelope import ok
from stepstone.api.routes.operators import request_actor
from stepstone.ops import check_payload_size
from stepstone.repair import RepairRequest, repair

router = APIRouter(tags=["stepstone extensions"])

REPAIR = deps.INSTANCE_PREFIX + "/stepstone/repair"


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
