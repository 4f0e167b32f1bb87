"""A sleep parked beside a step that is still running (asyncio.gather): once the step ends, the
activation must notice that nothing executes any more and release the instance to wait for the
sleep, rather than staying ``running`` with nothing to do."""

from __future__ import annotations

import asyncio
from typing import Any

from stepstone import Engine, WorkflowEntrypoint
from tests.engine.conftest import steps_of, wait_for

RELEASE = asyncio.Event()


class SleepBesideAStep(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def slow() -> str:
            await RELEASE.wait()  # finishes only after the sleep has parked
            return "done"

        _, result = await asyncio.gather(step.sleep("nap", "1 second"), step.do("slow", slow))
        return result


async def test_a_step_that_ends_after_a_parked_sleep_lets_the_instance_wait(
    engine: Engine,
) -> None:
    RELEASE.clear()
    await engine.register("sleep-beside", SleepBesideAStep)
    handle = await engine.workflow("sleep-beside").create(id="g1")
    # The sleep is recorded (and so parked) while the step still runs.
    async with asyncio.timeout(10):
        while ("sleep", "nap-1") not in await steps_of(engine, "sleep-beside", "g1"):
            await asyncio.sleep(0.01)
    RELEASE.set()
    status = await wait_for(handle, "complete", "errored", timeout=15)
    assert status == {**status, "status": "complete", "output": "done"}
