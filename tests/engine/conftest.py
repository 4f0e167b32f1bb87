from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from stepstone import Engine, InstanceHandle, WorkerSettings
from stepstone.engine.worker import Worker
from tests.conftest import WITH_PORTABLE, backend_urls
from tests.engine import flows

WORKFLOWS = {
    "sequential": flows.Sequential,
    "flaky": flows.Flaky,
    "nonretryable": flows.NonRetryable,
    "slow": flows.Slow,
    "sleeper": flows.Sleeper,
    "approval": flows.Approval,
    "blocking": flows.Blocking,
    "saga": flows.Saga,
    "restartable": flows.Restartable,
    "decorated": flows.Decorated,
    "bad-parameter": flows.BadParameter,
    "gathered": flows.Gathered,
    "diverging": flows.Diverging,
    "unserialisable": flows.Unserialisable,
    "many-steps": flows.ManySteps,
    "streams": flows.Streams,
    "parent": flows.Parent,
    "dynamic-delay": flows.DynamicDelay,
}


@pytest.fixture(params=WITH_PORTABLE)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_urls(request, tmp_path)


@pytest.fixture
async def engine(backend_url: str) -> AsyncIterator[Engine]:
    flows.CALLS.clear()
    flows.GATES.clear()
    eng = await Engine.open(
        backend_url,
        worker_settings=WorkerSettings(concurrency=20, poll_ms=25, lease_ms=5_000),
        env={"GREETING": "hello"},
    )
    for name, cls in WORKFLOWS.items():
        await eng.register(name, cls, limits_steps=50 if name == "many-steps" else None)
    try:
        yield eng
    finally:
        await eng.close()


async def wait_for(handle: InstanceHandle, *statuses: str, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            status = await handle.status()
            if status["status"] in statuses:
                return status
            await asyncio.sleep(0.01)


async def steps_of(engine: Engine, workflow: str, instance_id: str) -> dict[tuple[str, str], Any]:
    _, record = await engine.ops.instance("default", workflow, instance_id)
    return (await engine.ops.history(record)).steps


class LoopPasses:
    """Counts a worker's passes over its claim loop.

    Each pass is a chance to claim more work, so a test asserting that nothing more was claimed
    waits for passes (an explicit signal) rather than for an amount of time.
    """

    def __init__(self, worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        refresh = worker._refresh_workflows  # the first thing each pass does

        async def counted() -> None:
            self.count += 1
            await refresh()

        monkeypatch.setattr(worker, "_refresh_workflows", counted)

    async def more(self, passes: int = 2, timeout: float = 10.0) -> None:
        """Until ``passes`` more have begun, so at least ``passes - 1`` whole ones have run."""
        target = self.count + passes
        async with asyncio.timeout(timeout):
            while self.count < target:
                await asyncio.sleep(0.005)

    def more_sync(self, passes: int = 2, timeout: float = 10.0) -> None:
        """``more`` for a test whose worker runs on another thread's loop."""
        target = self.count + passes
        deadline = time.monotonic() + timeout
        while self.count < target:
            assert time.monotonic() < deadline, f"the worker made {self.count} passes"
            time.sleep(0.005)
