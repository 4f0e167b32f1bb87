"""Workflows the CLI tests drive through a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from stepstone import NonRetryableError, WorkflowEntrypoint


class Greeter(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        name = (event["payload"] or {}).get("name", "world")

        async def greet() -> dict[str, Any]:
            return {"greeting": f"hello {name}", "padding": "x" * 300}

        return await step.do("greet", greet)


class Approval(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def prepare() -> str:
            return "prepared"

        async def undo(ctx: Any, output: Any, error: Exception) -> str:
            return "undone"

        await step.do("prepare", prepare, rollback=undo)
        approval = await step.wait_for_event("approve", "approval", timeout="1 hour")

        async def finish() -> Any:
            return approval["payload"]

        return await step.do("finish", finish)


class Streamer(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def produce() -> AsyncIterator[bytes]:
            async def chunks() -> AsyncIterator[bytes]:
                for i in range(3):
                    yield bytes([i]) * 1000 + b"\xff\xfe"

            return chunks()

        stream = await step.do("produce", produce)
        return sum([len(chunk) async for chunk in stream])


class Failing(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def refuse() -> None:
            raise NonRetryableError("card declined")

        await step.do("charge", refuse)


class Sleeper(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        await step.sleep("nap", "1 hour")
