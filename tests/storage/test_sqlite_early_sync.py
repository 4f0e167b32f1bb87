"""SQLite FULL: a lone step result's fdatasync starts at its commit, yet nothing is acknowledged
before it ends, and a writer's result-then-end still shares one sync."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from stepstone import Engine, WorkerSettings, WorkflowEntrypoint
from stepstone.storage.base import NewEvent
from stepstone.storage.sqlite import SqliteStorage
from stepstone.storage.sqlite_writer import WalSyncer
from tests.storage.conftest import NOW, claimed, syncer_of


@pytest.fixture(autouse=True)
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Early syncs happen only while fdatasyncs are slow; any disk counts as slow here."""
    monkeypatch.setattr(WalSyncer, "EARLY_SYNC_MIN_S", -1.0)


def step(n: int) -> list[NewEvent]:
    return [NewEvent("step_completed", NOW, b'{"output":1}', "do", f"s{n}-1")]


async def test_a_lone_step_result_syncs_at_its_commit_once_a_wait_found_one(
    tmp_path: Path,
) -> None:
    storage, claim = await claimed(tmp_path)
    syncer = syncer_of(storage)
    try:
        await storage.record_progress(claim, step(0))
        assert syncer.pending and not syncer._in_flight  # on demand: nobody waited yet
        await storage.sync()  # the wait finds one lone step result
        assert not syncer.pending
        await storage.record_progress(claim, step(1))
        # Syncing already, before anyone waits, and still not acknowledged as durable.
        assert syncer._in_flight and syncer.pending
        await storage.sync()
        assert not syncer.pending and not syncer._in_flight
        events = await storage.load_events(claim.instance.pk)
        assert [e.step_name for e in events][-2:] == ["s0-1", "s1-1"]
    finally:
        await storage.close()


async def test_a_durable_write_after_the_result_turns_early_syncs_off(tmp_path: Path) -> None:
    storage, claim = await claimed(tmp_path)
    syncer = syncer_of(storage)
    try:
        await storage.record_progress(claim, step(0))
        await storage.sync()
        await storage.record_progress(claim, step(1))
        assert syncer._in_flight
        # An activation's end (an awaited durable write) right after its last result: it
        # waits for a sync that began after its own commit.
        await storage.set_active_status(claim, "running")
        assert not syncer.pending
        # The next lone result is synced on demand again, sharing a sync with what follows.
        await storage.record_progress(claim, step(2))
        assert syncer.pending and not syncer._in_flight
        await storage.sync()
        assert not syncer.pending
    finally:
        await storage.close()


class Steps(WorkflowEntrypoint):
    storage: SqliteStorage
    unsynced_when_run: list[bool] = []

    async def run(self, event: Any, step: Any) -> int:
        total = 0
        for n in range(40):

            async def work(n: int = n) -> int:
                Steps.unsynced_when_run.append(syncer_of(Steps.storage).pending)
                return n

            total += await step.do(f"s{n}", work)
        return total


async def test_sequential_steps_take_one_sync_each_and_run_only_on_durable_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = [0]
    real = os.fdatasync

    def counted(fd: int) -> None:
        syncs[0] += 1
        real(fd)

    engine = await Engine.open(
        f"sqlite:///{tmp_path}/e.db", worker_settings=WorkerSettings(poll_ms=25)
    )
    try:
        assert isinstance(engine.storage, SqliteStorage)
        Steps.storage = engine.storage
        Steps.unsynced_when_run = []
        await engine.register("steps", Steps)
        monkeypatch.setattr(os, "fdatasync", counted)
        handle = await engine.workflow("steps").create()
        result = await handle.wait(timeout=20)
        assert result["status"] == "complete", result
        assert result["output"] == sum(range(40))
        assert Steps.unsynced_when_run == [False] * 40
        # One per step result, plus the create and the end (the last result syncing early
        # costs the end a sync of its own); handle.wait's polls write nothing.
        assert 40 <= syncs[0] <= 43, syncs[0]
    finally:
        await engine.close()


async def test_events_queued_after_a_result_took_the_earlier_ones_are_still_written(
    tmp_path: Path,
) -> None:
    storage, claim = await claimed(tmp_path)
    try:
        started = [NewEvent("attempt_started", NOW, b'{"attempt":1}', "do", "s0-1")]
        storage.record_progress_nowait(claim, started)
        await storage.record_progress(claim, step(0))  # takes them; the linger timer stays
        storage.record_progress_nowait(claim, [NewEvent("attempt_started", NOW, None, "do", "x")])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while storage._queued and loop.time() < deadline:
            await asyncio.sleep(0.001)
        await storage.sync()
        events = await storage.load_events(claim.instance.pk)
        assert [(e.type, e.step_name) for e in events][-3:] == [
            ("attempt_started", "s0-1"),
            ("step_completed", "s0-1"),
            ("attempt_started", "x"),
        ]
    finally:
        await storage.close()


async def test_on_a_fast_disk_a_lone_step_result_still_syncs_on_demand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(WalSyncer, "EARLY_SYNC_MIN_S", 1e9)
    storage, claim = await claimed(tmp_path)
    syncer = syncer_of(storage)
    try:
        await storage.record_progress(claim, step(0))
        await storage.sync()
        await storage.record_progress(claim, step(1))
        assert syncer.pending and not syncer._in_flight
        await storage.sync()
        assert not syncer.pending
    finally:
        await storage.close()
