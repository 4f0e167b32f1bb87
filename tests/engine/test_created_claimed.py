"""An instance created in a process whose worker has a slot free, and nothing else waiting for
it, is committed claimed by that worker and runs at once: no wake-up, no claim statement.
A queued instance keeps its turn over a newer one (caps: tests/test_project_concurrency.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from stepstone import Engine, WorkerSettings
from stepstone.ops.inputs import CreateRequest
from tests.conftest import BACKENDS, backend_urls
from tests.engine import flows
from tests.engine.conftest import LoopPasses, wait_for


# Not the portable PostgreSQL mode: it polls, so its loop passes cannot tell a claim from none.
@pytest.fixture(params=BACKENDS)
def quiet_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_urls(request, tmp_path)


@pytest.fixture
async def one_slot(quiet_url: str) -> AsyncIterator[Engine]:
    flows.CALLS.clear()
    flows.GATES.clear()
    # A poll an hour long: the loop runs only when woken.
    settings = WorkerSettings(concurrency=1, poll_ms=3_600_000, lease_ms=5_000)
    eng = await Engine.open(quiet_url, worker_settings=settings)
    await eng.register("blocking", flows.Blocking)
    try:
        yield eng
    finally:
        for gate in flows.GATES.values():
            gate.set()
        await eng.close()


async def until_called(key: str) -> None:
    async with asyncio.timeout(10):
        while flows.CALLS[key] == 0:
            await asyncio.sleep(0.005)


async def test_an_instance_created_with_a_slot_free_runs_without_a_claim(
    one_slot: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert one_slot.worker is not None
    passes = LoopPasses(one_slot.worker, monkeypatch)
    one_slot.worker.invalidate_workflows()
    await passes.more(1)  # the loop has read the workflows, and sleeps until woken
    before = passes.count
    _, (created,) = await one_slot.ops.create_instances(
        "default", "blocking", [CreateRequest("a", b'{"gate": "a"}')], skip_existing=False
    )
    # The create's answer is Cloudflare's: a new instance is queued.
    assert created.status == "queued"
    await until_called("hold-a")
    assert passes.count == before, "the worker's loop was woken to claim it"
    _, record = await one_slot.ops.instance("default", "blocking", "a")
    assert record.status == "running"
    flows.gate("a").set()
    handle = await one_slot.workflow("blocking").get("a")
    assert (await handle.wait(10))["output"] == ["held", "after"]


async def test_a_queued_instance_keeps_its_turn_over_a_newer_one(
    one_slot: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert one_slot.worker is not None
    workflow = one_slot.workflow("blocking")
    first = await workflow.create(id="first", params={"gate": "first"})
    await until_called("hold-first")
    # The one slot is taken: the second waits queued, and the third must not overtake it
    # when the slot frees.
    second = await workflow.create(id="second", params={"gate": "second"})
    assert (await second.status())["status"] == "queued"
    flows.gate("first").set()
    await wait_for(first, "complete")
    await until_called("hold-second")
    third = await workflow.create(id="third", params={"gate": "third"})
    assert (await third.status())["status"] == "queued"
    assert flows.CALLS["hold-third"] == 0
    flows.gate("second").set()
    flows.gate("third").set()
    assert (await third.wait(10))["status"] == "complete"
    assert flows.CALLS["hold-second"] == flows.CALLS["hold-third"] == 1
