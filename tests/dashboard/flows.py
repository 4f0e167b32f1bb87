"""Workflows the dashboard tests run; registered by module path ``tests.dashboard.flows``."""

from __future__ import annotations

from typing import Any

from stepstone import WorkflowEntrypoint

FAST_RETRY = {"retries": {"limit": 3, "delay": 300, "backoff": "constant"}, "timeout": "1 minute"}


class Journey(WorkflowEntrypoint):
    """Everything the instance page shows: a retry, a sensitive step, a byte stream, a sleep
    long enough to watch, and a wait for an ``approval`` event."""

    async def run(self, event: Any, step: Any) -> Any:
        @step.do("prepare", config=FAST_RETRY)
        async def prepare(ctx: Any) -> Any:
            if ctx["attempt"] < 2:
                raise ConnectionError("warming up")
            return {"items": 3, "note": "ready"}

        prepared = await prepare()
        await step.do("secret", lambda: "hunter2", config={"sensitive": "output"})
        await step.do("report", lambda: b"sku,qty\n" + b"A1,2\n" * 200)
        await step.sleep("cool off", (event["payload"] or {}).get("sleep", "2 seconds"))
        approval = await step.wait_for_event("await approval", "approval", timeout="1 hour")
        shipped = await step.do("ship", lambda: {"tracking": f"trk_{event.instance_id}"})
        return {"items": prepared["items"], "by": approval["payload"], **shipped}


class Waiter(WorkflowEntrypoint):
    """Waits for a ``go`` event for an hour: an instance to pause, resume and terminate."""

    async def run(self, event: Any, step: Any) -> Any:
        got = await step.wait_for_event("wait", "go", timeout="1 hour")
        return got["payload"]
