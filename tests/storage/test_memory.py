"""The in-memory store's own terms, and contract cases the second model brought to light."""

from __future__ import annotations

import orjson
import pytest

from stepstone.storage import open_storage
from stepstone.storage.base import (
    ApprovalLinkRecord,
    Fenced,
    NewEvent,
    Storage,
    Transition,
)
from stepstone.storage.memory import MemoryStorage
from stepstone.storage.sqlite import SqliteStorage
from tests.storage.conftest import NOW, Fixture


def test_memory_url_is_the_python_store_and_sqlite_memory_stays_sqlite() -> None:
    assert isinstance(open_storage("memory://"), MemoryStorage)
    assert isinstance(open_storage("sqlite:///:memory:"), SqliteStorage)


async def test_a_reopened_memory_store_starts_empty_and_a_closed_one_refuses() -> None:
    store = open_storage("memory://")
    with pytest.raises(RuntimeError, match="not open"):
        await store.get_workflow("acct", "orders")
    await store.open()
    await store.put_account_settings("acct", 5, 6)
    await store.open()  # idempotent: nothing is lost
    assert await store.get_account_settings("acct") == (5, 6)
    await store.close()
    with pytest.raises(RuntimeError, match="not open"):
        await store.get_account_settings("acct")
    await store.open()
    assert await store.get_account_settings("acct") == (None, None)
    await store.close()


async def test_a_transition_whose_closing_events_fail_writes_nothing(fx: Fixture) -> None:
    await fx.create("a")
    before = await fx.get("a")

    def closing(log: object) -> list[NewEvent]:
        raise ValueError("cannot close")

    transition = Transition(
        "terminated",
        ended=True,
        release_worker=True,
        reset_history=True,
        closing=closing,
        events=[NewEvent("workflow_terminated", NOW + 1)],
    )
    with pytest.raises(ValueError, match="cannot close"):
        await fx.storage.transition_instance(before.pk, "queued", transition, NOW + 1)
    assert await fx.get("a") == before
    assert await fx.event_types("a") == ["workflow_queued"]
    assert [c.instance.id for c in await fx.claim()] == ["a"]


async def test_a_claim_of_a_deleted_instance_is_fenced_on_the_next_instance(fx: Fixture) -> None:
    # SQLite gives a new row the pk of the newest deleted one: its fence compares the id too.
    await fx.create("old")
    stale = await fx.claim_one("old")
    await fx.storage.delete_instances(fx.workflow.pk, ["old"])
    await fx.create("new")
    await fx.claim_one("new")  # the same owner, at the same epoch the stale claim has
    with pytest.raises(Fenced):
        await fx.storage.record_progress(stale, [NewEvent("step_started", NOW, b"{}", "do", "x")])
    assert await fx.event_types("new") == ["workflow_queued"]


async def test_an_approval_link_of_a_deleted_instance_stays_gone(
    fx: Fixture, storage: Storage
) -> None:
    await fx.create("old")
    old = await fx.get("old")
    await storage.create_approval_link(
        ApprovalLinkRecord("link-1", old.pk, "approve", NOW + 60_000, NOW, "ok?")
    )
    await storage.delete_instances(fx.workflow.pk, ["old"])
    await fx.create("new", params=orjson.dumps({"n": 1}))
    assert await storage.get_approval_link("link-1") is None
