"""Workflows for the dashboard's truth tests (tests/dashboard/test_truth.py).

Also a worker process for the lost-attempt test: ``python -m tests.dashboard.truth_flows URL``
registers ``lost``, creates instance ``victim`` and prints ``hanging`` once the first attempt
of its step has started, then hangs until killed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from stepstone import Engine, WorkerSettings, WorkflowEntrypoint

SLOW_RETRY = {"retries": {"limit": 2, "delay": "1 hour", "backoff": "constant"}}
QUICK_RETRY = {"retries": {"limit": 3, "delay": 200, "backoff": "constant"}}


class Flaky(WorkflowEntrypoint):
    """Fails its step once and then waits an hour for the retry."""

    async def run(self, event: Any, step: Any) -> Any:
        async def charge() -> Any:
            raise ConnectionError("card network down")

        return await step.do("charge", charge, config=SLOW_RETRY)


class Napper(WorkflowEntrypoint):
    """One sleep, as long as the params say (an hour unless told)."""

    async def run(self, event: Any, step: Any) -> Any:
        await step.sleep("nap", (event.payload or {}).get("sleep", "1 hour"))
        return "rested"


class Refuses(WorkflowEntrypoint):
    """Errors before its first step."""

    async def run(self, event: Any, step: Any) -> Any:
        raise ValueError("bad params: no customer")


class Pipeline(WorkflowEntrypoint):
    """A retry, two steps at once, a short sleep and a last step: a timeline and a graph."""

    async def run(self, event: Any, step: Any) -> Any:
        @step.do("fetch", config=QUICK_RETRY)
        async def fetch(ctx: Any) -> Any:
            if ctx["attempt"] < 2:
                # Long enough to be drawn apart from its retry delay: an attempt that fails in
                # the millisecond it starts shares its first pixel with the delay after it.
                await asyncio.sleep(0.02)
                raise TimeoutError("upstream slow")
            return 2

        count = await fetch()
        left, right = await asyncio.gather(
            step.do("left", lambda: count + 1), step.do("right", lambda: count + 2)
        )
        await step.sleep("settle", 300)
        return await step.do("total", lambda: left + right)


class AnExceptionallyLongWorkflowClassNameThatWouldWrapMidWord(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        return await step.do("only", lambda: 1)


HANG = asyncio.Event()


class Lost(WorkflowEntrypoint):
    """Hangs in the process that is killed (``_hang`` below); anywhere else it succeeds."""

    async def run(self, event: Any, step: Any) -> Any:
        async def work(ctx: Any) -> Any:
            if HANGING:
                print("hanging", flush=True)
                await HANG.wait()
            return f"done on attempt {ctx['attempt']}"

        return await step.do("work", work, config=QUICK_RETRY)


# Set only in the process the test kills: a takeover's attempt must not hang as well.
HANGING = False


async def _hang(url: str) -> None:
    from stepstone.project import ProjectConfig
    from tests.api.conftest import ACCOUNT

    # Registered by its module path, as the other process will import it (not __main__).
    from tests.dashboard.truth_flows import Lost as Registered

    engine = await Engine.open(
        url,
        config=ProjectConfig(account_id=ACCOUNT),
        worker_settings=WorkerSettings(poll_ms=20, lease_ms=600),
    )
    await engine.register("lost", Registered)
    await engine.workflow("lost").create(id="victim")
    await HANG.wait()


if __name__ == "__main__":
    # Run as __main__, while the class the engine loads is the importable module's copy.
    import tests.dashboard.truth_flows as registered  # noqa: PLW0406

    registered.HANGING = True
    asyncio.run(_hang(sys.argv[1]))


class Many(WorkflowEntrypoint):
    """More steps than the timeline draws lanes for."""

    async def run(self, event: Any, step: Any) -> Any:
        for _ in range(event.payload["steps"]):
            await step.do("tick", lambda: 1)
        return "done"
