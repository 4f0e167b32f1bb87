"""Repair and webhooks in the dashboard (extensions): the repair form of an instance's steps,
and a workflow's webhooks page with each delivery's attempts and a re-send button. Every
action is recorded as the session's token, like the dashboard's other actions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from stepstone.errors import InvalidRequest, StepstoneError
from stepstone.repair import RepairRequest, parse_output, repair
from stepstone.web.common.guard import segment
from stepstone.web.dashboard.access import ViewerDep, state
from stepstone.web.dashboard.app import PREFIX
from stepstone.web.dashboard.operators import viewer_actor
from stepstone.webhooks.service import Hooks, delivery_dict, hook_dict

router = APIRouter()

WORKFLOW = PREFIX + "/accounts/{account_id}/workflows/{workflow_name}"
INSTANCE = WORKFLOW + "/instances/{instance_id}"
DELIVERY_ROWS = 50


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


@router.post(INSTANCE + "/repair")
async def repair_step(
    request: Request, who: ViewerDep, account_id: str, workflow_name: str, instance_id: str
) -> Response:
    from stepstone.web.dashboard import present
    from stepstone.web.dashboard.actions import attempt, back
    from stepstone.web.dashboard.pages import instance_url

    ops = state(request).ops
    where = (segment(account_id), segment(workflow_name), segment(instance_id))
    form = await request.form()
    try:
        kind, count, name = present.parse_restart_value(_text(form.get("step")))
    except ValueError:
        raise InvalidRequest("repair: pick a step from the list") from None
    if kind != "do":
        raise InvalidRequest("repair: only a step.do can be repaired")
    resume = _text(form.get("resume")) == "yes"
    try:
        output = parse_output(_text(form.get("output")) or "null")
    except StepstoneError as exc:
        who.session.flash("error", str(exc))
        return back(instance_url(*where))
    req = RepairRequest(f"{name}-{count}", output, resume, viewer_actor(who))
    note = f"Step {name}-{count} repaired" + ("; the instance is queued." if resume else ".")
    await attempt(who, repair(ops, *where, req), note)
    return back(instance_url(*where))


@router.get(WORKFLOW + "/hooks")
async def hooks_page(
    request: Request, who: ViewerDep, account_id: str, workflow_name: str
) -> Response:
    from stepstone.web.dashboard.pages import page, workflow_url

    ops = state(request).ops
    account, name = segment(account_id), segment(workflow_name)
    workflow = await ops.workflow(account, name)
    service = Hooks(ops)
    state_filter = request.query_params.get("state") or None
    deliveries = await service.deliveries(account, name, state=state_filter, limit=DELIVERY_ROWS)
    return page(
        request,
        who,
        "hooks.html",
        workflow=workflow,
        hooks=[hook_dict(h) for h in await service.hooks(account, name)],
        deliveries=[delivery_dict(d) for d in deliveries],
        state_filter=state_filter or "",
        back=workflow_url(account, name),
        base=workflow_url(account, name) + "/hooks",
    )


@router.post(WORKFLOW + "/hooks/deliveries/{delivery_id}/resend")
async def resend(
    request: Request, who: ViewerDep, account_id: str, workflow_name: str, delivery_id: str
) -> Response:
    from stepstone.web.dashboard.actions import attempt, back
    from stepstone.web.dashboard.pages import workflow_url

    ops = state(request).ops
    account, name, delivery = segment(account_id), segment(workflow_name), segment(delivery_id)
    await attempt(
        who,
        Hooks(ops).resend(account, name, delivery, viewer_actor(who)),
        f"Delivery {delivery} queued to send again.",
    )
    return back(workflow_url(account, name) + "/hooks")
