"""Deleting an instance deletes its child and approval links; a parent waiting on a deleted
child is woken and its step fails with ChildInstanceGone instead of waiting for ever."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stepstone import Engine, WorkerSettings
from stepstone.errors import StepstoneError
from stepstone.storage.base import ApprovalLinkRecord
from tests.engine.conftest import steps_of
from tests.engine.test_children import NO_RETRY, RUNS, WORKFLOWS


@pytest.fixture
async def engine(backend_url: str) -> AsyncIterator[Engine]:
    RUNS.clear()
    # A poll far longer than any test: only a wake can take the parent up again.
    eng = await Engine.open(
        backend_url, worker_settings=WorkerSettings(concurrency=10, poll_ms=600_000)
    )
    for name, cls in WORKFLOWS.items():
        await eng.register(name, cls)
    try:
        yield eng
    finally:
        await eng.close()


async def _rows(engine: Engine, table: str) -> int:
    storage: Any = engine.storage
    tables = getattr(storage, "_tables", None)
    if tables is not None:
        pytest.skip("the plain-Python store keeps no link tables to count")
    sql = f"SELECT count(*) FROM {table}"
    if hasattr(storage, "_db"):
        return int(await storage._db.read(lambda c: c.fetchval(sql)))
    return int(storage._read(lambda c: c.execute(sql).fetchone()[0]))


async def _child_waiting(engine: Engine, instance_id: str) -> None:
    """Polls until the parent has created the child and the child waits for its event."""
    async with asyncio.timeout(10):
        while True:
            try:
                status = await (await engine.workflow("gated").get(instance_id)).status()
            except StepstoneError:  # not created yet
                status = {}
            if status.get("status") == "waiting":
                return
            await asyncio.sleep(0.01)


async def test_a_parent_waiting_on_a_deleted_child_fails_its_step(engine: Engine) -> None:
    parent = await engine.workflow("parent").create(
        id="p1", params={"workflow": "gated", "id": "kid", "config": NO_RETRY}
    )
    await _child_waiting(engine, "kid")
    assert await engine.ops.delete_instances("default", "gated", ["kid"]) == ["kid"]
    status = await parent.wait(10)
    assert status["status"] == "complete"
    # The step's error, as the parent's code caught it and as the history records it.
    assert status["output"] == {"error": "StepError", "message": "the child instance was deleted"}
    step = (await steps_of(engine, "parent", "p1"))[("do", "child-1")]
    assert not step.success and step.error["name"] == "ChildInstanceGone"


async def test_a_deleted_instance_leaves_no_links_for_a_later_one(engine: Engine) -> None:
    await engine.workflow("gated").create(id="g1")
    await _child_waiting(engine, "g1")
    _, record = await engine.ops.instance("default", "gated", "g1")
    now = engine.ops.now()
    link = ApprovalLinkRecord("al_1", record.pk, "go", now + 3_600_000, now)
    await engine.storage.create_approval_link(link)
    assert await _rows(engine, "approval_links") == 1
    await engine.ops.delete_instances("default", "gated", ["g1"])
    assert await _rows(engine, "approval_links") == 0
    # A new instance may get the deleted one's pk (SQLite reuses the highest): the old link
    # must not send its event to it.
    await engine.workflow("gated").create(id="g2")
    await _child_waiting(engine, "g2")
    assert await engine.storage.get_approval_link("al_1") is None


async def test_deleting_a_parent_drops_its_links_and_keeps_the_child(engine: Engine) -> None:
    await engine.workflow("parent").create(
        id="p1", params={"workflow": "gated", "id": "kid", "config": NO_RETRY}
    )
    await _child_waiting(engine, "kid")
    await engine.ops.delete_instances("default", "parent", ["p1"])
    assert await _rows(engine, "child_links") == 0
    _, kid = await engine.ops.instance("default", "gated", "kid")
    links = await engine.storage.instance_links(kid.pk)
    assert links.parent is None and links.children == ()
