"""An order: charge with retries, wait for a human approval, ship; refund if anything fails.

Written the Cloudflare Python way (``from workers import ...``): Stepstone supplies the module.
Payload: ``{"items": [{"sku": "A1", "qty": 2, "price": 10.0}], "fail_payment_attempts": 0}``.
"""

from __future__ import annotations

from typing import Any

from workers import WorkflowEntrypoint
from workers.workflows import NonRetryableError

from stepstone import WorkflowTimeoutError


class OrderWorkflow(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        order = event["payload"] or {}

        @step.do("validate order")
        async def validate() -> float:
            items = order.get("items") or []
            if not items or any(item.get("qty", 0) <= 0 for item in items):
                raise NonRetryableError("an order needs items with a positive quantity")
            return round(sum(item["qty"] * item["price"] for item in items), 2)

        async def refund(ctx: dict[str, Any], output: Any, error: Exception) -> dict[str, Any]:
            # A real refund would call the payment provider with the charge id (``output``).
            return {"refunded": output, "because": str(error)}

        @step.do(
            "charge payment",
            config={
                "retries": {"limit": 3, "delay": "1 second", "backoff": "exponential"},
                "timeout": "30 seconds",
            },
            rollback=refund,
        )
        async def charge(validate: float, ctx: dict[str, Any]) -> dict[str, Any]:
            if ctx["attempt"] <= order.get("fail_payment_attempts", 0):
                raise ConnectionError("payment provider unavailable")
            return {"charge_id": f"ch_{event.instance_id}", "amount": validate}

        payment = await charge()
        try:
            approval = await step.wait_for_event("await approval", "approval", timeout="1 hour")
        except WorkflowTimeoutError:
            raise NonRetryableError("nobody approved the order within an hour") from None
        if not (approval["payload"] or {}).get("approved"):
            raise NonRetryableError("the order was rejected")

        @step.do("ship")
        async def ship() -> dict[str, Any]:
            return {"tracking": f"trk_{event.instance_id}"}

        shipment = await ship()
        return {"charged": payment["amount"], "tracking": shipment["tracking"]}
