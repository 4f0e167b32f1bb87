"""Workflows of the rollback, replay-detection and Python-SDK scenarios (engineer A's tests).

``SEEN`` records, per instance, what each compensation received, so a test can assert which
steps were compensated, in which order, and with which output.
"""

from __future__ import annotations

from typing import Any

from stepstone import NonRetryableError, WorkflowEntrypoint

SEEN: dict[str, list[Any]] = {}
FAST = {"retries": {"limit": 2, "delay": 10, "backoff": "constant"}}


def seen(instance_id: str) -> list[Any]:
    return SEEN.setdefault(instance_id, [])


class ThreeSteps(WorkflowEntrypoint):
    """reserve and charge (both compensated), an optional wait, then ship (compensated)."""

    async def run(self, event: Any, step: Any) -> Any:
        options = event["payload"] or {}
        log = seen(event.instance_id)

        async def undo(ctx: dict[str, Any], output: Any, error: Exception) -> None:
            log.append((ctx["step"]["name"], output, type(error).__name__))

        await step.do("reserve", lambda: {"id": "r1"}, rollback=undo, rollback_config=FAST)
        await step.do("charge", lambda: {"id": "c1"}, rollback=undo, rollback_config=FAST)
        pause = options.get("pause")
        if pause == "sleep":
            await step.sleep("cool-off", options.get("sleep_ms", 3_600_000))
        elif pause == "wait":
            await step.wait_for_event("hold", "go", timeout="1 hour")

        async def ship() -> Any:
            if options.get("ship_fails"):
                raise NonRetryableError("warehouse closed")
            return {"id": "s1"}

        await step.do("ship", ship, rollback=undo, rollback_config=FAST)
        if options.get("fail_after"):
            raise ValueError("failed after shipping")
        return "shipped"


# What Evolving runs, per instance id: (version, [(kind, name, argument), ...]). A test
# changes the plan between activations, as a deploy changes the code under a running instance.
PLANS: dict[str, tuple[int, list[tuple[str, str, Any]]]] = {}


class Evolving(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        version, plan = PLANS[event.instance_id]
        seen(event.instance_id).append(f"run@{version}")
        results = []
        for kind, name, argument in plan:
            if kind == "do":
                value = await step.do(name, lambda n=name: f"{n}@{version}", config=argument)
                results.append(value)
            elif kind == "sleep":
                await step.sleep(name, argument)
            else:
                await step.wait_for_event(name, "go", timeout="1 hour")
        return results


def inner_helper_that_fails(value: str) -> None:
    raise ValueError(f"boom <{value}>")


class Exploding(WorkflowEntrypoint):
    """A step that fails on both of its attempts, from inside a helper."""

    async def run(self, event: Any, step: Any) -> Any:
        async def explode() -> None:
            inner_helper_that_fails("x")

        config = {"retries": {"limit": 1, "delay": 10, "backoff": "constant"}}
        await step.do("explode", explode, config=config)


class PySaga(WorkflowEntrypoint):
    """The saga example of Cloudflare's Python Workers API page, with knobs for failures."""

    async def run(self, event: Any, step: Any) -> Any:
        options = event["payload"] or {}
        log = seen(event.instance_id)
        try:

            @step.with_rollback("create order")
            async def create_order() -> Any:
                return {"id": "o1"}

            @create_order.undo
            async def undo_create_order(err: Any, order: Any) -> None:
                log.append(("undo create", str(err), order))

            order = await create_order()

            @step.with_rollback("charge payment", config=FAST)
            async def charge_payment() -> Any:
                if options.get("charge_fails"):
                    raise NonRetryableError("card declined")
                return {"charge": order["id"]}

            @charge_payment.undo(config={"retries": {"limit": 1, "delay": 10}})
            def undo_charge_payment(err: Any, charge: Any) -> None:  # a plain function too
                log.append(("undo charge", str(err), charge))
                if options.get("undo_fails"):
                    raise RuntimeError("refund failed")

            await charge_payment()

            @step.do("send confirmation")
            async def send_confirmation() -> None:
                raise NonRetryableError("mail down")

            await send_confirmation()
        except Exception as e:
            await step.rollback_all(e, continue_on_error=bool(options.get("continue")))
            raise


class Waker(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        from datetime import datetime, timedelta

        await step.sleep("short", 50)
        # The docs' own example: a naive datetime, which is local time.
        await step.sleep_until("later", datetime.now() + timedelta(milliseconds=300))
        return "awake"


class EventShape(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        return {
            "keys": sorted(event),
            "payload": [event["payload"], event.payload, event.get("payload")],
            "timestamp": [event["timestamp"].isoformat(), event.timestamp.isoformat()],
            "instanceId": [event["instanceId"], event.instanceId, event.instance_id],
            "workflowName": [event["workflowName"], event.workflowName, event.workflow_name],
        }


class BadCalls(WorkflowEntrypoint):
    """Each wrong call's TypeError, as run() sees it."""

    async def run(self, event: Any, step: Any) -> Any:
        calls = [
            lambda: step.do("x", lambda: 1, bogus=1),
            lambda: step.do("x", depends=[]),
            lambda: step.sleep("x"),
            step.sleep_until,
            lambda: step.wait_for_event("x", "go", timeot="1 hour"),
            step.with_rollback,
            lambda: step.rollback_all(None, True),
        ]
        messages = []
        for call in calls:
            try:
                call()
            except TypeError as exc:
                messages.append(str(exc))
        return messages
