from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stepstone import Engine, InstanceHandle, WorkerSettings
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
