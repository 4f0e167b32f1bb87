"""Retention: expired instances are swept in batches, and their ids can be used again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stepstone import Engine, NonRetryableError, WorkerSettings, WorkflowEntrypoint, embedded
from stepstone.engine.clock import ManualClock
from stepstone.errors import InstanceNotFound
from stepstone.model.retention import DEFAULT_RETENTION_MS, resolve_retention
from stepstone.retention import RetentionSweeper
from stepstone.storage.base import VersionRecord

T0 = 1_780_000_000_000


class Done(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        return "ok"


class Fails(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def boom() -> None:
            raise NonRetryableError("no")

        await step.do("boom", boom)


def version(success: int | None, error: int | None) -> VersionRecord:
    return VersionRecord("v", 1, "C", "m", 0, None, success, error, (), "python")


def test_resolution_order() -> None:
    assert resolve_retention(None, (None, None)) == (DEFAULT_RETENTION_MS, DEFAULT_RETENTION_MS)
    assert resolve_retention(version(None, None), (5, 6)) == (5, 6)
    assert resolve_retention(version(3, None), (5, 6)) == (3, 6)
    assert resolve_retention(version(3, 4), (5, 6), (1, None)) == (1, 4)


@pytest.fixture
async def engine(backend_url: str) -> AsyncIterator[tuple[Engine, ManualClock]]:
    clock = ManualClock(T0)
    eng = await Engine.open(backend_url, worker_settings=WorkerSettings(poll_ms=10), clock=clock)
    await eng.register("done", Done)
    await eng.register("fails", Fails)
    try:
        yield eng, clock
    finally:
        await eng.close()


async def test_instance_retention_expires_and_frees_the_id(
    engine: tuple[Engine, ManualClock],
) -> None:
    eng, clock = engine
    sweeper = RetentionSweeper(eng.storage, clock=clock)
    binding = eng.workflow("done")
    handle = await binding.create(id="order-1", retention={"successRetention": 1})
    assert (await handle.wait())["status"] == "complete"
    assert await sweeper.sweep() == 0  # not expired yet: retention counts from the end
    clock.advance(1)
    assert await sweeper.sweep() == 1
    with pytest.raises(InstanceNotFound):
        await handle.status()
    again = await binding.create(id="order-1")
    assert (await again.wait())["status"] == "complete"


async def test_error_retention_applies_to_errored_and_terminated(
    engine: tuple[Engine, ManualClock],
) -> None:
    eng, clock = engine
    sweeper = RetentionSweeper(eng.storage, clock=clock)
    retention = {"successRetention": "1 day", "errorRetention": 5}
    failed = await eng.workflow("fails").create(id="f", retention=retention)
    ok = await eng.workflow("done").create(id="ok", retention=retention)
    assert (await failed.wait())["status"] == "errored"
    assert (await ok.wait())["status"] == "complete"
    clock.advance(5)
    assert await sweeper.sweep() == 1
    with pytest.raises(InstanceNotFound):
        await failed.status()
    assert (await ok.status())["status"] == "complete"


async def test_version_then_account_defaults(engine: tuple[Engine, ManualClock]) -> None:
    eng, clock = engine
    sweeper = RetentionSweeper(eng.storage, clock=clock)
    await eng.ops.put_workflow(
        "default", "done", class_name="Done", script_name=__name__, success_retention=10
    )
    await eng.storage.put_account_settings("default", 20, 20)
    by_version = await eng.workflow("done").create(id="by-version")
    by_account = await eng.workflow("fails").create(id="by-account")
    await by_version.wait()
    await by_account.wait()
    clock.advance(10)
    assert await sweeper.sweep() == 1
    clock.advance(10)
    assert await sweeper.sweep() == 1
    for handle in (by_version, by_account):
        with pytest.raises(InstanceNotFound):
            await handle.status()


async def test_sweeps_in_batches(engine: tuple[Engine, ManualClock]) -> None:
    eng, clock = engine
    handles = await eng.workflow("done").create_batch(
        [{"id": f"i-{n}", "retention": {"successRetention": 1}} for n in range(7)]
    )
    for handle in handles:
        await handle.wait()
    clock.advance(1)
    assert await RetentionSweeper(eng.storage, clock=clock, batch=3).sweep() == 7
    assert await RetentionSweeper(eng.storage, clock=clock, batch=3, max_batches=1).sweep() == 0


async def test_the_worker_sweeps_on_its_own(
    backend_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "SWEEP_SECONDS", 0.02)
    async with await Engine.open(backend_url, worker_settings=WorkerSettings(poll_ms=10)) as eng:
        await eng.register("done", Done)
        handle = await eng.workflow("done").create(id="short", retention={"successRetention": 1})
        # No wait() here: with 1 ms of retention the sweeper may delete the instance before a
        # poll sees it complete. Only finished instances expire, so its going away is enough.
        async with asyncio.timeout(10):
            while True:
                try:
                    await handle.status()
                except InstanceNotFound:
                    break
                await asyncio.sleep(0.02)
        again = await eng.workflow("done").create(id="short")
        assert (await again.wait())["status"] == "complete"
