"""Step attempt timeouts: one timer per loop, and asyncio.timeout's behaviour otherwise."""

from __future__ import annotations

import asyncio

import pytest

from stepstone.engine.deadlines import AttemptDeadline


async def test_an_attempt_past_its_deadline_is_cancelled_and_raises_timeout() -> None:
    never = asyncio.Event()
    with pytest.raises(TimeoutError):
        async with AttemptDeadline(0.01) as scope:
            await never.wait()
    assert scope.expired()


async def test_an_attempt_that_ends_in_time_is_left_alone() -> None:
    async with AttemptDeadline(600) as scope:
        await asyncio.sleep(0)
    assert not scope.expired()


async def test_a_shorter_deadline_after_a_longer_one_still_fires_first() -> None:
    release = asyncio.Event()

    async def long_attempt() -> str:
        async with AttemptDeadline(600):
            await release.wait()
        return "done"

    slow = asyncio.ensure_future(long_attempt())
    await asyncio.sleep(0)  # the 10-minute deadline arms the loop's timer first
    never = asyncio.Event()
    with pytest.raises(TimeoutError):
        async with AttemptDeadline(0.01):
            await never.wait()
    assert not slow.done()
    release.set()
    assert await slow == "done"


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    started = asyncio.Event()

    async def attempt() -> None:
        async with AttemptDeadline(600):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(attempt())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_attempts_do_not_each_leave_a_timer_on_the_loop() -> None:
    loop = asyncio.get_running_loop()
    async with AttemptDeadline(600):
        pass
    before = len(loop._scheduled)  # type: ignore[attr-defined]
    for _ in range(500):
        async with AttemptDeadline(600):
            await asyncio.sleep(0)
    assert len(loop._scheduled) <= before + 1  # type: ignore[attr-defined]
