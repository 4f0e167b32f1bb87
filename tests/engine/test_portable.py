"""The engine on the portable PostgreSQL mode, where no notification wakes a worker: work made by
another process is found by polling, backed off while idle, and a stop made by another process
reaches the running instance through its lease renewal.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stepstone import Engine, WorkerSettings, WorkflowEntrypoint
from tests.conftest import portable_url
from tests.engine import flows
from tests.engine.conftest import LoopPasses, steps_of, wait_for
from tests.storage.test_portable import Heard

POLL_MS = 2_000
# Lease renewals every lease_ms / 3: 0.3 s.
LEASE_MS = 900


class Quick(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        return await step.do("one", lambda: 1)


@pytest.fixture
async def engines(pg_database: str) -> AsyncIterator[tuple[Engine, Engine]]:
    """A worker's engine, and one without a worker standing for another process."""
    flows.CALLS.clear()
    flows.GATES.clear()
    url = portable_url(pg_database)
    settings = WorkerSettings(concurrency=10, poll_ms=POLL_MS, lease_ms=LEASE_MS)
    worker = await Engine.open(url, worker_settings=settings)
    other = await Engine.open(url, run_worker=False)
    for name, cls in {"quick": Quick, "blocking": flows.Blocking}.items():
        await worker.register(name, cls)
    try:
        yield worker, other
    finally:
        await other.close()
        await worker.close()


async def test_work_from_another_process_is_found_by_polling_that_backs_off(
    engines: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, other = engines
    assert worker.worker is not None and not worker.storage.push_wakes
    looks: list[float] = []
    refresh = worker.worker._refresh_workflows  # the first thing each pass does

    async def look() -> None:
        looks.append(time.monotonic())
        await refresh()

    monkeypatch.setattr(worker.worker, "_refresh_workflows", look)
    # Idle (nothing wakes this worker): each wait twice the last, up to poll_ms.
    async with asyncio.timeout(15):
        while len(looks) < 2 or looks[-1] - looks[-2] < POLL_MS / 1000 * 0.9:
            await asyncio.sleep(0.01)
    gaps = [b - a for a, b in itertools.pairwise(looks)]
    assert all(later >= earlier * 1.5 for earlier, later in itertools.pairwise(gaps[:-1]))

    created = time.monotonic()
    handle = await other.workflow("quick").create(id="q1")
    assert (await handle.wait(10))["status"] == "complete"
    assert time.monotonic() - created < POLL_MS / 1000 + 1.5  # at the next look

    # Work found: the looks come soon again, so work that keeps coming waits little (without
    # the reset this would wait up to poll_ms).
    second = await other.workflow("quick").create(id="q2")
    created = time.monotonic()
    assert (await second.wait(10))["status"] == "complete"
    assert time.monotonic() - created < POLL_MS / 1000 / 2


async def test_work_of_the_same_process_wakes_its_worker_at_once(
    engines: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, _ = engines
    assert worker.worker is not None
    await LoopPasses(worker.worker, monkeypatch).more(4)  # idle at poll_ms
    created = time.monotonic()
    handle = await worker.workflow("quick").create(id="local")
    assert (await handle.wait(10))["status"] == "complete"
    assert time.monotonic() - created < POLL_MS / 1000 / 2


async def test_a_terminate_from_another_process_stops_the_running_step(
    engines: tuple[Engine, Engine],
) -> None:
    worker, other = engines
    handle = await worker.workflow("blocking").create(id="t", params={"gate": "t"})
    async with asyncio.timeout(10):
        while flows.CALLS["holding"] == 0:
            await asyncio.sleep(0.01)
    await (await other.workflow("blocking").get("t")).terminate()
    stopped = time.monotonic()
    # No control notification: the next lease renewal finds the claim gone.
    async with asyncio.timeout(10):
        while flows.CALLS["holding"] > 0:
            await asyncio.sleep(0.01)
    assert time.monotonic() - stopped < LEASE_MS / 1000 + 1.0
    assert (await handle.status())["status"] == "terminated"
    assert ("do", "after-1") not in await steps_of(worker, "blocking", "t")


async def test_a_pause_from_another_process_holds_the_instance_until_resumed(
    engines: tuple[Engine, Engine],
) -> None:
    worker, other = engines
    handle = await worker.workflow("blocking").create(id="p", params={"gate": "p"})
    async with asyncio.timeout(10):
        while flows.CALLS["holding"] == 0:
            await asyncio.sleep(0.01)
    elsewhere = await other.workflow("blocking").get("p")
    await elsewhere.pause()
    flows.gate("p").set()
    await wait_for(handle, "paused")
    assert ("do", "after-1") not in await steps_of(worker, "blocking", "p")
    await elsewhere.resume()
    assert (await handle.wait(10))["output"] == ["held", "after"]


async def test_an_engine_run_sends_no_notification(pg_database: str) -> None:
    heard = await Heard.on(pg_database)
    try:
        async with await Engine.open(
            portable_url(pg_database), worker_settings=WorkerSettings(poll_ms=POLL_MS)
        ) as engine:
            await engine.register("quick", Quick)
            await engine.register("blocking", flows.Blocking)
            handle = await engine.workflow("quick").create(id="n")
            assert (await handle.wait(10))["status"] == "complete"
            held = await engine.workflow("blocking").create(id="b", params={"gate": "b"})
            await wait_for(held, "running")
            await held.terminate()
            await held.delete()
        assert await heard.before_sentinel(pg_database) == []
    finally:
        await heard.conn.close()
