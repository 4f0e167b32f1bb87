"""Workflows the cheap-reads tests hold in every status; registered as ``tests.api.read_flows``.

The gates are asyncio events on the server's loop (the test opens them with ``LiveServer.run``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from stepstone import NonRetryableError, WorkflowEntrypoint

GATES: dict[str, asyncio.Event] = {}


def gate(name: str) -> asyncio.Event:
    return GATES.setdefault(name, asyncio.Event())


async def open_gate(name: str) -> None:
    gate(name).set()


class Held(WorkflowEntrypoint):
    """Steps with one name shared by a sleep and a wait, a step held at the instance's gate
    (its rollback held at the undo gate), then a wait for ``go``."""

    async def run(self, event: Any, step: Any) -> Any:
        me = event.instance_id

        async def undo(ctx: Any, output: Any, error: Exception) -> None:
            await gate(f"undo-{me}").wait()

        await step.do("first", lambda: {"n": 1, "text": "x" * 3000}, rollback=undo)
        await step.do("shared", lambda: "do")
        await step.do("secret", lambda: "hunter2", config={"sensitive": "output"})
        await step.sleep("nap", "1 millisecond")

        async def hold() -> str:
            await gate(me).wait()
            return "held"

        await step.do("hold", hold)
        await step.sleep("shared", "1 millisecond")
        got = await step.wait_for_event("shared", "go", timeout="1 hour")
        return got["payload"]


class Doomed(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        await step.do("fine", lambda: 1)

        def fatal() -> None:
            raise NonRetryableError("no way")

        await step.do("doomed", fatal)
