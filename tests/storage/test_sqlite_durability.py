"""SQLite at synchronous=FULL: commits inline, the WAL synced before anyone depends on them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from stepstone import Engine, WorkerSettings, WorkflowEntrypoint
from stepstone.storage import open_storage
from stepstone.storage.base import NewEvent, NewInstance, WorkflowDefinition
from stepstone.storage.sqlite import SqliteStorage
from stepstone.storage.sqlite_writer import StorageSyncFailed

NOW = 1_700_000_000_000


def unsynced(storage: SqliteStorage) -> bool:
    """Whether a durable commit has not been synced yet (the writer's own bookkeeping)."""
    syncer = storage._writer._syncer if storage._writer is not None else None
    assert syncer is not None, "a file at synchronous=FULL syncs its WAL"
    return syncer.pending


async def open_full(path: Path) -> SqliteStorage:
    storage = open_storage(f"sqlite:///{path}")
    assert isinstance(storage, SqliteStorage)
    await storage.open()
    return storage


async def test_the_wal_is_zero_filled_and_the_database_reopens_intact(tmp_path: Path) -> None:
    storage = await open_full(tmp_path / "s.db")
    try:
        wal_size = (tmp_path / "s.db-wal").stat().st_size
        # 1,000 frames between checkpoints (SQLite's default), each a 4 KiB page + 24 bytes.
        assert wal_size >= 1000 * (4096 + 24)
        workflow = await storage.register_workflow(
            "acct", "orders", WorkflowDefinition("Orders", "shop"), NOW
        )
        await storage.create_instances(
            workflow.pk,
            workflow.version.id,
            [NewInstance(f"i{n}", b"{}") for n in range(300)],
            NOW,
            skip_existing=False,
        )
    finally:
        await storage.close()
    reopened = await open_full(tmp_path / "s.db")
    try:
        found = await reopened.get_workflow("acct", "orders")
        assert found is not None
        assert (await reopened.count_instances(found.pk)) == {"queued": 300}
    finally:
        await reopened.close()


async def test_awaited_writes_are_synced_and_progress_is_synced_on_demand(
    tmp_path: Path,
) -> None:
    storage = await open_full(tmp_path / "s.db")
    try:
        workflow = await storage.register_workflow(
            "acct", "orders", WorkflowDefinition("Orders", "shop"), NOW
        )
        await storage.create_instances(
            workflow.pk, workflow.version.id, [NewInstance("a", b"{}")], NOW, skip_existing=False
        )
        assert not unsynced(storage)
        [claim] = await storage.claim_runnable("w1", 1, NOW, 30_000, [workflow.pk])
        await storage.record_progress(claim, [NewEvent("workflow_started", NOW, b"{}")])
        # A step's result returns at its commit; the worker syncs before user code runs.
        assert unsynced(storage)
        await storage.sync()
        assert not unsynced(storage)
        events = await storage.load_events(claim.instance.pk)
        assert [e.type for e in events] == ["workflow_queued", "workflow_started"]
    finally:
        await storage.close()


async def test_a_commit_that_changes_nothing_adds_no_sync_but_waits_for_earlier_ones(
    tmp_path: Path,
) -> None:
    storage = await open_full(tmp_path / "s.db")
    try:
        workflow = await storage.register_workflow(
            "acct", "orders", WorkflowDefinition("Orders", "shop"), NOW
        )
        assert not unsynced(storage)
        assert storage._writer is not None
        # An idle server's sweeps and claims find nothing: no fsync for them, and nothing a
        # worker about to run user code has to wait for.
        sweep = storage._writer.submit(
            lambda conn: conn.execute("DELETE FROM instance_events WHERE 0").rowcount
        )
        assert not unsynced(storage)
        assert sweep.done() and sweep.result() == 0
        await storage.create_instances(
            workflow.pk, workflow.version.id, [NewInstance("a", b"{}")], NOW, skip_existing=False
        )
        [claim] = await storage.claim_runnable("w1", 1, NOW, 30_000, [workflow.pk])
        await storage.record_progress(claim, [NewEvent("workflow_started", NOW, b"{}")])
        assert unsynced(storage)
        # A read-only job may return what that commit wrote: it is acknowledged after the sync.
        seen = storage._writer.submit(
            lambda conn: conn.execute("SELECT count(*) FROM instance_events").fetchone()[0]
        )
        assert not seen.done()
        assert await seen == 2
        assert not unsynced(storage)
    finally:
        await storage.close()


async def test_a_wal_that_cannot_be_synced_stops_all_writes(tmp_path: Path) -> None:
    storage = await open_full(tmp_path / "s.db")
    try:
        workflow = await storage.register_workflow(
            "acct", "orders", WorkflowDefinition("Orders", "shop"), NOW
        )
        # SQLite keeps writing to the unlinked file, which the next open will never see: a
        # write acknowledged now would be lost, so none may be.
        os.unlink(tmp_path / "s.db-wal")
        with pytest.raises(StorageSyncFailed):
            await storage.create_instances(
                workflow.pk,
                workflow.version.id,
                [NewInstance("a", b"{}")],
                NOW,
                skip_existing=False,
            )
        with pytest.raises(StorageSyncFailed):
            await storage.put_account_settings("acct", 1000, 1000)
    finally:
        await storage.close()


class ChecksDurability(WorkflowEntrypoint):
    storage: SqliteStorage
    seen: list[bool] = []

    async def run(self, event: Any, step: Any) -> int:
        total = 0
        for n in range(5):

            async def work(n: int = n) -> int:
                ChecksDurability.seen.append(unsynced(ChecksDurability.storage))
                return n

            total += await step.do(f"s{n}", work)
        return total


async def test_user_code_runs_only_once_every_recorded_result_is_durable(
    tmp_path: Path,
) -> None:
    engine = await Engine.open(
        f"sqlite:///{tmp_path}/e.db", worker_settings=WorkerSettings(poll_ms=25)
    )
    try:
        assert isinstance(engine.storage, SqliteStorage)
        ChecksDurability.storage = engine.storage
        ChecksDurability.seen = []
        await engine.register("checks", ChecksDurability)
        handle = await engine.workflow("checks").create()
        result = await handle.wait(timeout=10)
        assert result["status"] == "complete", result
        assert result["output"] == 10
        assert ChecksDurability.seen == [False] * 5
    finally:
        await engine.close()
