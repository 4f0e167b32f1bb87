"""Workflows the harness and the replay checker are tested with.

``Approval*`` are versions of one workflow: ``Approval`` is what ran; each other class is a
change a deploy could bring, for the replay checker to judge against Approval's records.
"""

from __future__ import annotations

import asyncio
from typing import Any

from stepstone import NonRetryableError, WorkflowEntrypoint, WorkflowTimeoutError

# Calls of real step bodies, so a test can tell a mocked step from one that ran.
CALLS: list[str] = []


class Approval(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        return await approval(event, step)


async def approval(event: Any, step: Any) -> Any:
    """Approval's run(), which its changed versions below build on."""
    order = event["payload"] or {}

    @step.do("reserve")
    async def reserve() -> dict[str, Any]:
        CALLS.append("reserve")
        return {"sku": order.get("sku", "A1"), "held": True}

    held = await reserve()
    try:
        decision = await step.wait_for_event("approval", "approval", timeout="2 days")
    except WorkflowTimeoutError:
        return {"shipped": False, "reason": "timeout"}

    @step.do("ship")
    async def ship() -> str:
        CALLS.append("ship")
        return f"trk-{held['sku']}"

    if not (decision["payload"] or {}).get("approved"):
        raise NonRetryableError("rejected")
    return {"shipped": True, "tracking": await ship()}


class ApprovalStepAdded(WorkflowEntrypoint):
    """A step added before the recorded ones."""

    async def run(self, event: Any, step: Any) -> Any:
        await step.do("fraud check", lambda: True)
        return await approval(event, step)


class ApprovalStepRenamed(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        held = await step.do("reserve stock", lambda: {"sku": "A1", "held": True})
        await step.wait_for_event("approval", "approval", timeout="2 days")
        return {"shipped": True, "tracking": f"trk-{held['sku']}"}


class ApprovalNewOutput(WorkflowEntrypoint):
    """Same steps, another return value."""

    async def run(self, event: Any, step: Any) -> Any:
        result = await approval(event, step)
        return {**result, "version": 2}


class ApprovalStepAppended(WorkflowEntrypoint):
    """A step after the recorded ones: new work for waiting instances, a divergence for
    completed ones."""

    async def run(self, event: Any, step: Any) -> Any:
        result = await approval(event, step)
        await step.do("notify", lambda: None)
        return result


class ApprovalOtherEvent(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        await step.do("reserve", lambda: {"sku": "A1", "held": True})
        await step.wait_for_event("approval", "approval-v2", timeout="2 days")
        return {"shipped": True}


class Reminder(WorkflowEntrypoint):
    """Sleeps three days, then sends a reminder that fails twice before it goes through."""

    async def run(self, event: Any, step: Any) -> Any:
        await step.sleep("cool off", "3 days")

        @step.do(
            "send reminder",
            config={"retries": {"limit": 3, "delay": "10 minutes", "backoff": "constant"}},
        )
        async def send(ctx: dict[str, Any]) -> dict[str, Any]:
            CALLS.append(f"send {ctx['attempt']}")
            if ctx["attempt"] <= (event["payload"] or {}).get("failures", 0):
                raise ConnectionError("mail server down")
            return {"sent": True, "attempt": ctx["attempt"]}

        return await send()


class Fanout(WorkflowEntrypoint):
    """Parallel branches, a byte stream and a legacy-style direct call."""

    async def run(self, event: Any, step: Any) -> Any:
        names = (event["payload"] or {}).get("names", ["a", "b"])

        async def fetch(name: str) -> Any:
            return await step.do(f"fetch {name}", lambda: {"name": name, "size": len(name)})

        rows = await asyncio.gather(*(fetch(n) for n in names))

        async def render() -> bytes:
            return b"".join(r["name"].encode() for r in rows)

        blob = await step.do("render", render)
        return {"rows": len(rows), "bytes": len(blob)}


class FanoutBranchDropped(WorkflowEntrypoint):
    """The same, but one branch no longer runs: its recorded step is never asked for."""

    async def run(self, event: Any, step: Any) -> Any:
        row = await step.do("fetch a", lambda: {"name": "a", "size": 1})
        blob = await step.do("render", lambda: b"")
        return {"rows": 1 if row else 0, "bytes": len(blob)}


class Trip(WorkflowEntrypoint):
    """A Python-style saga: the undo's recorded result decides what run() returns."""

    async def run(self, event: Any, step: Any) -> Any:
        fail = (event["payload"] or {}).get("fail_flight", False)

        @step.with_rollback("book hotel")
        async def hotel() -> str:
            return "H1"

        @hotel.undo
        async def cancel_hotel(error: Exception, value: Any) -> None:
            CALLS.append(f"cancel {value}")
            if (event["payload"] or {}).get("fail_undo"):
                raise NonRetryableError("hotel will not cancel")

        @step.with_rollback("book flight")
        async def flight() -> str:
            if fail:
                raise NonRetryableError("no seats")
            return "F1"

        try:
            booked = [await hotel(), await flight()]
        except NonRetryableError as exc:
            try:
                await step.rollback_all(exc)
            except NonRetryableError as undo_failed:
                return {"booked": False, "undo": str(undo_failed)}
            return {"booked": False, "undo": "done"}
        return {"booked": booked}
