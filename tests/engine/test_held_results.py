"""A step's result commits with the activation's next write (the next step's, a wait's, the
end's), and on its own when none comes soon; never after user code that could depend on it."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from stepstone import Engine, WorkerSettings, WorkflowEntrypoint
from tests.engine import flows
from tests.engine.conftest import steps_of


class StepThenGate(WorkflowEntrypoint):
    """One step, then user code that awaits something that is not a step."""

    async def run(self, event: Any, step: Any) -> Any:
        value = await step.do("first", lambda: 41)
        await flows.gate(f"after-{event.instance_id}").wait()
        return value + 1


class TwoSteps(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        a = await step.do("a", lambda: 1)
        b = await step.do("b", lambda: a + 1)
        return a + b


async def test_a_result_nothing_takes_along_is_written_on_its_own(engine: Engine) -> None:
    await engine.register("step-then-gate", StepThenGate)
    handle = await engine.workflow("step-then-gate").create(id="g1")
    # run() is blocked after the step: only the held result's own write can record it.
    async with asyncio.timeout(10):
        while True:
            record = (await steps_of(engine, "step-then-gate", "g1")).get(("do", "first-1"))
            if record is not None and record.done:
                break
            await asyncio.sleep(0.01)
    assert record.success is True
    assert (await handle.status())["status"] == "running"
    flows.gate("after-g1").set()
    assert (await handle.wait(10))["output"] == 42


async def test_the_last_result_commits_with_the_end(pg_database: str) -> None:
    """One transaction holds the last step's completion and the instance's end; an earlier
    step's completion is committed before the next step runs, in a transaction of its own."""
    engine = await Engine.open(pg_database, worker_settings=WorkerSettings(poll_ms=25))
    try:
        await engine.register("two-steps", TwoSteps)
        handle = await engine.workflow("two-steps").create(id="t1")
        assert (await handle.wait(10))["output"] == 3
        _, record = await engine.ops.instance("default", "two-steps", "t1")
    finally:
        await engine.close()
    conn = await asyncpg.connect(pg_database)
    try:
        rows = await conn.fetch(
            "SELECT type, step_name, xmin::text AS tx FROM instance_events"
            " WHERE instance_pk = $1 ORDER BY event_id",
            record.pk,
        )
    finally:
        await conn.close()
    tx = {(r["type"], r["step_name"]): r["tx"] for r in rows}
    end = tx[("workflow_completed", None)]
    assert tx[("step_completed", "b-1")] == end
    assert tx[("step_completed", "a-1")] != end
