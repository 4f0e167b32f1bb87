"""Cron schedules: schedule arithmetic, and one instance per firing across workers and restarts."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from stepstone import Engine, WorkerSettings, WorkflowEntrypoint
from stepstone.cron import (
    CronScheduler,
    InvalidCronError,
    due_firing,
    firing_id,
    next_fire_ms,
    next_instance_ms,
    previous_fire_ms,
    validate,
)
from stepstone.engine.clock import ManualClock
from stepstone.errors import InvalidWorkflowDefinition
from stepstone.ops import Operations
from stepstone.storage import open_storage
from stepstone.storage.base import InstanceQuery, Storage

EVERY_5 = "*/5 * * * *"
MINUTE = 60_000
DAY = 86_400_000


class Tick(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        return {"payload": event.payload, "schedule": event.schedule}


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


T0 = ms(2026, 3, 1, 10, 0)


# --- pure schedule arithmetic --------------------------------------------------------------


def test_firing_id_is_cloudflares_format() -> None:
    assert firing_id("*/30 * * * *", 1786001400000) == "*/30 * * * *-1786001400000"


@pytest.mark.parametrize("cron", ["*/30 * * * *", "0 0 * * MON#2", "0 0 1,15 * *", "0 2 * * 1-5"])
def test_valid_expressions(cron: str) -> None:
    assert validate(cron) == cron


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("61 * * * *", "'61 * * * *' is not a valid cron expression"),
        ("* * *", "expected five fields"),
        ("", "empty cron expression"),
        ("0 0 ? * MON", "cannot be scheduled"),
        ("@daily", "cannot be scheduled"),
        ("0 " * 200, "longer than 256"),
    ],
)
def test_invalid_expressions_say_why(cron: str, fragment: str) -> None:
    with pytest.raises(InvalidCronError, match=None) as caught:
        validate(cron)
    assert fragment in str(caught.value)


def test_next_fire_is_strictly_after() -> None:
    assert next_fire_ms(EVERY_5, T0 - 1) == T0
    assert next_fire_ms(EVERY_5, T0) == T0 + 5 * MINUTE
    assert next_fire_ms(EVERY_5, T0 + 1) == T0 + 5 * MINUTE
    assert next_fire_ms("0 0 * * MON#2", T0) == ms(2026, 3, 9)


def test_previous_fire_is_at_or_before() -> None:
    assert previous_fire_ms(EVERY_5, T0) == T0
    assert previous_fire_ms(EVERY_5, T0 + 999) == T0
    assert previous_fire_ms(EVERY_5, T0 - 1) == T0 - 5 * MINUTE
    assert previous_fire_ms("0 0 1 * *", T0 + 3 * DAY) == ms(2026, 3, 1)


def test_next_instance_for_workflow_responses() -> None:
    assert next_instance_ms([EVERY_5, "0 0 * * *"], T0) == {
        EVERY_5: T0 + 5 * MINUTE,
        "0 0 * * *": ms(2026, 3, 2),
    }


def test_due_firing_rules() -> None:
    window = 30 * DAY
    # A schedule never fires for times before it was registered.
    assert (
        due_firing(EVERY_5, now_ms=T0 + 1, since_ms=T0 + 1, last_look_ms=None, window_ms=window)
        is None
    )
    # Seen becoming due: fires, even if retention is tiny.
    assert due_firing(EVERY_5, now_ms=T0 + 5, since_ms=0, last_look_ms=T0 - 1, window_ms=1) == T0
    # Already looked at after it was due: only while its instance would still be retained.
    assert due_firing(EVERY_5, now_ms=T0 + 5, since_ms=0, last_look_ms=T0 + 1, window_ms=10) == T0
    assert (
        due_firing(EVERY_5, now_ms=T0 + 50, since_ms=0, last_look_ms=T0 + 1, window_ms=10) is None
    )
    # A fresh process catches up only the latest missed firing.
    late = T0 + 3 * 5 * MINUTE + 7
    assert due_firing(EVERY_5, now_ms=late, since_ms=0, last_look_ms=None, window_ms=window) == (
        T0 + 15 * MINUTE
    )


# --- the firing routine ----------------------------------------------------------------------


async def deploy(storage: Storage, clock: ManualClock, schedules: list[str]) -> Operations:
    ops = Operations(storage, clock=clock)
    await ops.put_workflow(
        "default", "ticks", class_name="Tick", script_name="tests.test_cron", schedules=schedules
    )
    return ops


async def instances(storage: Storage) -> list[Any]:
    workflow = await storage.get_workflow("default", "ticks")
    assert workflow is not None
    return await storage.list_instances(workflow.pk, InstanceQuery(limit=100, ascending=True))


async def test_fires_once_per_firing_with_deterministic_id(storage: Storage) -> None:
    clock = ManualClock(T0 - 2 * MINUTE)
    await deploy(storage, clock, [EVERY_5])
    scheduler = CronScheduler(storage, clock=clock)
    assert await scheduler.tick() == []
    clock.advance(2 * MINUTE)
    assert await scheduler.tick() == [f"{EVERY_5}-{T0}"]
    clock.advance(30_000)
    assert await scheduler.tick() == []
    clock.advance(4 * MINUTE + 30_000)
    assert await scheduler.tick() == [f"{EVERY_5}-{T0 + 5 * MINUTE}"]
    records = await instances(storage)
    assert [r.id for r in records] == [f"{EVERY_5}-{T0}", f"{EVERY_5}-{T0 + 5 * MINUTE}"]
    first = records[0]
    assert first.trigger_source == "cron"
    assert orjson.loads(first.params) == {}
    assert first.schedule is not None
    assert orjson.loads(first.schedule) == {"cron": EVERY_5, "scheduledTime": T0}


async def test_restarts_fire_only_the_latest_missed_firing_once(storage: Storage) -> None:
    clock = ManualClock(T0 - MINUTE)
    await deploy(storage, clock, [EVERY_5])
    # Everything is down for three firings; each restart catches up once, and only the last.
    clock.advance(MINUTE + 3 * 5 * MINUTE + 10)
    for _ in range(3):
        await CronScheduler(storage, clock=clock).tick()
        clock.advance(1_000)
    assert [r.id for r in await instances(storage)] == [f"{EVERY_5}-{T0 + 15 * MINUTE}"]


async def test_several_schedules_fire_independently(storage: Storage) -> None:
    clock = ManualClock(T0 - MINUTE)
    await deploy(storage, clock, [EVERY_5, "*/10 * * * *"])
    scheduler = CronScheduler(storage, clock=clock)
    await scheduler.tick()
    clock.advance(MINUTE)
    created = await scheduler.tick()
    assert sorted(created) == sorted([f"{EVERY_5}-{T0}", f"*/10 * * * *-{T0}"])


async def test_a_firing_that_expired_is_not_fired_again(storage: Storage) -> None:
    clock = ManualClock(T0 - MINUTE)
    ops = Operations(storage, clock=clock)
    await ops.put_workflow(
        "default",
        "ticks",
        class_name="Tick",
        script_name="tests.test_cron",
        schedules=["0 * * * *"],
        success_retention=2 * MINUTE,
        error_retention=2 * MINUTE,
    )
    scheduler = CronScheduler(storage, clock=clock)
    await scheduler.tick()
    clock.advance(MINUTE)
    assert await scheduler.tick() == [f"0 * * * *-{T0}"]
    # Its instance is gone (retention) before the next firing; neither this process nor a
    # restarted one may fire the same time again.
    clock.advance(5 * MINUTE)
    await ops.delete_instances("default", "ticks", [f"0 * * * *-{T0}"])
    assert await scheduler.tick() == []
    assert await CronScheduler(storage, clock=clock).tick() == []
    clock.advance(55 * MINUTE)
    assert await scheduler.tick() == [f"0 * * * *-{T0 + 60 * MINUTE}"]


async def test_a_new_schedule_does_not_fire_for_its_past(storage: Storage) -> None:
    clock = ManualClock(T0 + 4 * MINUTE)
    await deploy(storage, clock, [EVERY_5])
    assert await CronScheduler(storage, clock=clock).tick() == []


async def test_invalid_cron_is_rejected_at_registration(storage: Storage) -> None:
    ops = Operations(storage, clock=ManualClock(T0))
    with pytest.raises(InvalidWorkflowDefinition, match="'61 \\* \\* \\* \\*' is not a valid cron"):
        await ops.put_workflow(
            "default",
            "ticks",
            class_name="Tick",
            script_name="tests.test_cron",
            schedules=["61 * * * *"],
        )


async def test_two_workers_sharing_a_database_create_one_instance_per_firing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = open_storage(url), open_storage(url)
    await first.open()
    await second.open()
    try:
        clock = ManualClock(T0 - MINUTE + 1_000)
        await deploy(first, clock, [EVERY_5, "* * * * *"])
        workers = [CronScheduler(first, clock=clock), CronScheduler(second, clock=clock)]
        for _ in range(12):
            clock.advance(MINUTE // 2)
            results = await asyncio.gather(*(w.tick() for w in workers))
            # Each firing is created by exactly one of the two.
            created = [i for r in results for i in r]
            assert len(created) == len(set(created))
        ids = [r.id for r in await instances(first)]
        fires = [T0 + k * MINUTE for k in range(6)]
        expected = {f"* * * * *-{t}" for t in fires} | {
            f"{EVERY_5}-{T0 + 5 * k * MINUTE}" for k in range(2)
        }
        assert sorted(ids) == sorted(expected)
    finally:
        await first.close()
        await second.close()


async def test_two_engines_fire_through_the_worker_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: two engines (workers) on one SQLite file; the firing runs once."""
    url = f"sqlite:///{tmp_path / 'engines.db'}"
    clock = ManualClock(T0 - MINUTE)
    # Ticks begun and ended per scheduler: each scheduler's ticks run one after another.
    begun: Counter[int] = Counter()
    ended: Counter[int] = Counter()
    tick = CronScheduler.tick

    async def counted(self: CronScheduler) -> list[str]:
        begun[id(self)] += 1
        try:
            return await tick(self)
        finally:
            ended[id(self)] += 1

    monkeypatch.setattr(CronScheduler, "tick", counted)
    settings = WorkerSettings(poll_ms=20)
    one = await Engine.open(url, worker_settings=settings, clock=clock)
    two = await Engine.open(url, worker_settings=settings, clock=clock)
    try:
        await one.register("ticks", Tick, schedules=[EVERY_5])
        clock.advance(MINUTE)
        handle = None
        async with asyncio.timeout(10):
            while handle is None:
                await asyncio.sleep(0.05)
                try:
                    handle = await one.workflow("ticks").get(f"{EVERY_5}-{T0}")
                except Exception:
                    continue
            result = await handle.wait(timeout=10)
        assert result["status"] == "complete"
        assert result["output"] == {
            "payload": {},
            "schedule": {"cron": EVERY_5, "scheduledTime": T0},
        }
        # Until a tick of each engine begun after the firing has ended (both at T0 again).
        since = dict(begun)
        assert len(since) == 2
        async with asyncio.timeout(10):
            while any(ended[key] <= count for key, count in since.items()):
                await asyncio.sleep(0.01)
        assert [r.id for r in await instances(one.storage)] == [f"{EVERY_5}-{T0}"]
    finally:
        await one.close()
        await two.close()
