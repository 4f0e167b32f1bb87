"""Workflows the multi-process tests run; workers import them as ``tests.scale.flows``."""

from __future__ import annotations

import asyncio
from typing import Any

from stepstone import WorkflowEntrypoint

FAST_RETRY = {"retries": {"limit": 3, "delay": 100, "backoff": "constant"}}


class Pipeline(WorkflowEntrypoint):
    """Four steps and a short sleep: the timer path wakes workers through NOTIFY."""

    async def run(self, event: Any, step: Any) -> Any:
        n = event.payload["n"]
        total = 0
        for name in ("fetch", "parse", "enrich"):

            async def work(ctx: dict[str, Any], name: str = name) -> int:
                await asyncio.sleep(0.002)
                return len(name) + int(n)

            total += await step.do(name, work, config=FAST_RETRY)
        await step.sleep("settle", 50)

        async def store(ctx: dict[str, Any]) -> int:
            return total

        return await step.do("store", store, config=FAST_RETRY)


class SlowStep(WorkflowEntrypoint):
    """A long middle step, so a worker can be killed while it runs."""

    async def run(self, event: Any, step: Any) -> Any:
        async def quick(ctx: dict[str, Any]) -> str:
            return "ok"

        async def slow(ctx: dict[str, Any]) -> int:
            await asyncio.sleep(1.5)
            return int(ctx["attempt"])

        await step.do("before", quick, config=FAST_RETRY)
        attempt = await step.do("slow", slow, config=FAST_RETRY)
        await step.do("after", quick, config=FAST_RETRY)
        return attempt
