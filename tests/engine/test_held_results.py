"""A step's result commits with the activation's next write (the next step's, a wait's, the
end's), and on its own when none comes soon; never after user code that could depend on it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
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


# Run in a process of its own: the bug it guards against spun the event loop without yielding,
# which no timeout inside that loop can interrupt.
_WRITE_DONE_CALLBACK_PENDING = """
import asyncio
from stepstone.engine.pending_results import PendingResults
from stepstone.storage.base import NewEvent

async def main():
    written = []

    async def record(events):
        written.append([e.type for e in events])

    held = PendingResults(record)
    held.hold([NewEvent("step_completed", 1, b"{}", "do", "a-1")])
    held._held_since -= 1.0  # held past HOLD_S: the timer's turn
    held._due()  # the timer starts the write on its own
    await asyncio.sleep(0)  # the write runs and ends; its done callback is queued behind us
    assert held._writing is not None and held._writing.done()
    assert await held.take() == []
    held.hold([NewEvent("step_completed", 2, b"{}", "do", "b-1")])
    await held.settle()
    print(written)

asyncio.run(main())
"""


def test_a_write_the_timer_made_is_waited_for_even_before_its_callback_has_run() -> None:
    """The held results' own write had ended, its done callback not yet run, when the next
    write waited for it: that wait spun forever with the event loop stopped (a worker froze
    with a transaction open, found by tests/scale under load)."""
    done = subprocess.run(
        [sys.executable, "-c", _WRITE_DONE_CALLBACK_PENDING],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[['step_completed'], ['step_completed']]"
