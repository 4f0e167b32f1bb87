"""Managing hooks and their deliveries: what the REST routes, the CLI and the dashboard share.

Changes are audited (``hook.create``, ``hook.delete``, ``delivery.resend``) like every other
operator action. A hook's secret is shown once, when it is created; lists show its last four
characters only.
"""

from __future__ import annotations

from typing import Any

from stepstone.errors import InvalidRequest, RouteNotFound
from stepstone.model.actors import EMBEDDED_ACTOR, Actor
from stepstone.model.webhooks import STATES, DeliveryRecord, WebhookRecord
from stepstone.ops import Operations
from stepstone.views import iso
from stepstone.webhooks.config import parse_hook
from stepstone.webhooks.delivery import delivery_id

MAX_LIST = 500


def hook_dict(hook: WebhookRecord, *, reveal: bool = False) -> dict[str, Any]:
    return {
        "id": hook.id,
        "url": hook.url,
        "events": list(hook.events),
        "waitForEventLongerThanMs": hook.wait_threshold_ms,
        "source": hook.source,
        "created_on": iso(hook.created_on),
        "secret": hook.secret if reveal else "…" + hook.secret[-4:],
    }


def delivery_dict(d: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": delivery_id(d.pk),
        "hook": d.hook_id,
        "url": d.url,
        "instance": d.instance_id,
        "event": d.event,
        "at": iso(d.at),
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt_on": iso(d.next_attempt_at) if d.state == "pending" else None,
        "last_error": d.last_error,
        "delivered_on": iso(d.delivered_on),
        "log": [
            {
                "started_on": iso(a.started_on),
                "duration_ms": a.duration_ms,
                "status_code": a.status_code,
                "error": a.error,
            }
            for a in d.log
        ],
    }


def parse_delivery_id(value: str) -> int:
    digits = value.removeprefix("whd_")
    if not digits.isdigit():
        raise InvalidRequest(f"delivery id {value!r} is not whd_<number>")
    return int(digits)


class Hooks:
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    async def hooks(self, account_id: str, workflow_name: str) -> list[WebhookRecord]:
        workflow = await self.ops.workflow(account_id, workflow_name)
        return await self.ops.storage.list_webhooks(workflow.pk)

    async def add(
        self, account_id: str, workflow_name: str, entry: Any, actor: Actor = EMBEDDED_ACTOR
    ) -> WebhookRecord:
        async def work() -> WebhookRecord:
            workflow = await self.ops.workflow(account_id, workflow_name)
            hook = parse_hook(entry, where="webhook", now=self.ops.now())
            taken = {h.id for h in await self.ops.storage.list_webhooks(workflow.pk)}
            if isinstance(entry, dict) and "id" in entry and hook.id in taken:
                raise InvalidRequest(f"webhook {hook.id!r} exists; delete it first")
            await self.ops.storage.put_webhooks(workflow.pk, [hook], replace_source=None)
            return hook

        detail = {"url": entry.get("url") if isinstance(entry, dict) else None}
        where = (account_id, workflow_name, "")
        hook: WebhookRecord = await self.ops._audited(
            actor, "hook.create", where, detail, work(), None, None
        )
        return hook

    async def remove(
        self, account_id: str, workflow_name: str, hook_id: str, actor: Actor = EMBEDDED_ACTOR
    ) -> None:
        async def work() -> None:
            workflow = await self.ops.workflow(account_id, workflow_name)
            if not await self.ops.storage.delete_webhook(workflow.pk, hook_id):
                raise RouteNotFound(f"webhook {hook_id!r} not found")

        where = (account_id, workflow_name, "")
        await self.ops._audited(actor, "hook.delete", where, {"hook": hook_id}, work(), None, None)

    async def deliveries(
        self,
        account_id: str,
        workflow_name: str,
        *,
        hook_id: str | None = None,
        state: str | None = None,
        limit: int = 50,
    ) -> list[DeliveryRecord]:
        if state is not None and state not in STATES:
            raise InvalidRequest(f"state must be one of {', '.join(STATES)}")
        if not 1 <= limit <= MAX_LIST:
            raise InvalidRequest(f"limit must be 1 to {MAX_LIST}")
        workflow = await self.ops.workflow(account_id, workflow_name)
        return await self.ops.storage.list_deliveries(workflow.pk, hook_id, state, limit)

    async def resend(
        self, account_id: str, workflow_name: str, delivery: str, actor: Actor = EMBEDDED_ACTOR
    ) -> None:
        pk = parse_delivery_id(delivery)

        async def work() -> None:
            workflow = await self.ops.workflow(account_id, workflow_name)
            if not await self.ops.storage.resend_delivery(workflow.pk, pk, self.ops.now()):
                raise RouteNotFound(f"delivery {delivery!r} not found")

        where = (account_id, workflow_name, "")
        detail = {"delivery": delivery}
        await self.ops._audited(actor, "delivery.resend", where, detail, work(), None, None)
