"""The benchmark workflows, importable by module path so a worker can load them.

They mirror the DBOS harness's workflows: a no-op step returns ``{"i": i, "ok": True}``.
"""

from __future__ import annotations

from typing import Any

from stepstone import WorkflowEntrypoint, WorkflowEvent, WorkflowStep


def _noop(i: int) -> Any:
    async def noop() -> dict[str, Any]:
        return {"i": i, "ok": True}

    return noop


class Seq(WorkflowEntrypoint):
    """``n`` sequential no-op steps (the per-step overhead workload)."""

    async def run(self, event: WorkflowEvent, step: WorkflowStep) -> Any:
        n = event.payload["n"]
        for i in range(n):
            await step.do(f"s{i}", _noop(i))
        return n


class ThreeSteps(WorkflowEntrypoint):
    """Three no-op steps (the throughput workload)."""

    async def run(self, event: WorkflowEvent, step: WorkflowStep) -> Any:
        for i in range(3):
            await step.do(f"s{i}", _noop(i))
        return event.payload["k"]


class OneStep(WorkflowEntrypoint):
    """One no-op step (the latency workload)."""

    async def run(self, event: WorkflowEvent, step: WorkflowStep) -> Any:
        await step.do("s0", _noop(event.payload["k"]))
        return event.payload["k"]


class Sleeper(WorkflowEntrypoint):
    """Sleeps an hour: an instance that stays waiting (the memory workload)."""

    async def run(self, event: WorkflowEvent, step: WorkflowStep) -> Any:
        await step.sleep("nap", "1 hour")
        return None
