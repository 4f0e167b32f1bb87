"""Workflows the API tests run; registered by module path ``tests.api.flows``."""

from __future__ import annotations

from typing import Any

from stepstone import NonRetryableError, WorkflowEntrypoint

FAST_RETRY = {"retries": {"limit": 3, "delay": 10, "backoff": "constant"}, "timeout": "1 minute"}
SLOW_RETRY = {"retries": {"limit": 2, "delay": "1 hour", "backoff": "constant"}}


class Echo(WorkflowEntrypoint):
    """Returns its params; one plain step."""

    async def run(self, event: Any, step: Any) -> Any:
        return await step.do("echo", lambda: event["payload"])


class Tour(WorkflowEntrypoint):
    """A step that fails once, a sensitive step, a byte stream, a sleep and an event."""

    async def run(self, event: Any, step: Any) -> Any:
        @step.do("flaky", config=FAST_RETRY)
        async def flaky(ctx: Any) -> Any:
            if ctx["attempt"] < 2:
                raise ValueError("first attempt fails")
            return {"attempt": ctx["attempt"], "text": "x" * 2000}

        await flaky()
        await step.do("secret", lambda: "hunter2", config={"sensitive": "output"})
        blob = await step.do("blob", lambda: bytes(range(256)) * 1000)
        await step.sleep("nap", "10 milliseconds")
        approval = await step.wait_for_event("approval", "approve", timeout="1 hour")
        return {"blob": len(blob), "approved_by": approval["payload"]}


class Retrying(WorkflowEntrypoint):
    """A step that fails and then waits an hour before its next attempt."""

    async def run(self, event: Any, step: Any) -> Any:
        def boom() -> None:
            raise ValueError("down")

        await step.do("call", boom, config=SLOW_RETRY)


class Failing(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        def fatal() -> None:
            raise NonRetryableError("no way")

        await step.do("doomed", fatal)


class Waiter(WorkflowEntrypoint):
    """Waits for an event; the event's payload is the output."""

    async def run(self, event: Any, step: Any) -> Any:
        got = await step.wait_for_event("wait", "go", timeout="1 hour")
        return got["payload"]


class Counter(WorkflowEntrypoint):
    """Returns a number, for the numeric output rendering."""

    async def run(self, event: Any, step: Any) -> Any:
        return await step.do("one", lambda: 41) + 1
