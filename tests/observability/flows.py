"""Workflows the observability tests run; registered by module path
``tests.observability.flows``."""

from __future__ import annotations

import logging
from typing import Any

from stepstone import WorkflowEntrypoint

FAST_RETRY = {"retries": {"limit": 3, "delay": 10, "backoff": "constant"}, "timeout": "1 minute"}
log = logging.getLogger("tests.observability.flows")


class FailsOnce(WorkflowEntrypoint):
    """Two steps: ``flaky`` fails its first attempt, then both succeed (3 attempts, 1 retry)."""

    async def run(self, event: Any, step: Any) -> Any:
        @step.do("flaky", config=FAST_RETRY)
        async def flaky(ctx: Any) -> Any:
            log.info("flaky attempt %d", ctx["attempt"])
            if ctx["attempt"] < 2:
                raise ValueError("first attempt fails")
            return ctx["attempt"]

        attempts = await flaky()
        done = await step.do("after", lambda: "done")
        return {"attempts": attempts, "after": done}


class Waits(WorkflowEntrypoint):
    """Waits for an event, then one step: two activations."""

    async def run(self, event: Any, step: Any) -> Any:
        got = await step.wait_for_event("wait", "go", timeout="1 hour")
        return await step.do("finish", lambda: got["payload"])
