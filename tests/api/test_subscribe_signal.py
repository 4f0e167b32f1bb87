"""The event stream waits on the store's append signal instead of polling (issue 15).

On every backend: a commit of this process wakes a subscriber though no fallback poll could
(it is an hour away); idle subscribers read nothing while fallback polls go by, and each poll
is one read for all of them; another process's writes and deletes reach them through the poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from stepstone.ops import Operations
from stepstone.storage import open_storage
from stepstone.storage.base import (
    InstanceRecord,
    NewEvent,
    Release,
    Storage,
    Transition,
    WorkflowDefinition,
)
from stepstone.web.common.sse import MIN_READ_GAP_SECONDS, instance_events
from tests.storage.conftest import NOW, Fixture

# Long enough that only the signal can explain a prompt delivery.
NO_POLL = 3600.0
# A bound on delivery that only a missed signal would exceed.
PROMPT = 10.0


@pytest.fixture
async def fx(storage: Storage) -> Fixture:
    workflow = await storage.register_workflow(
        "acct", "orders", WorkflowDefinition("OrderWorkflow", "shop.orders"), NOW
    )
    return Fixture(storage, workflow)


def ops_of(storage: Storage) -> Operations:
    return Operations(storage)


def data(frame: bytes | None) -> dict[str, Any]:
    assert frame is not None, "a heartbeat, not an event"
    line = next(x for x in frame.split(b"\n") if x.startswith(b"data: "))
    loaded: dict[str, Any] = orjson.loads(line[6:])
    return loaded


async def next_event(stream: AsyncGenerator[bytes | None, None]) -> dict[str, Any]:
    async with asyncio.timeout(PROMPT):
        return data(await anext(stream))


@contextlib.asynccontextmanager
async def subscribed(
    storage: Storage, record: InstanceRecord
) -> AsyncIterator[AsyncGenerator[bytes | None, None]]:
    stream = instance_events(ops_of(storage), record, 0)
    try:
        yield stream
    finally:
        await stream.aclose()


class Counted:
    """Counts calls of one of a store's read methods, by wrapping the real one."""

    def __init__(self, target: Any, name: str) -> None:
        self.calls = 0
        real = getattr(target, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await real(*args, **kwargs)

        setattr(target, name, counted)


def step(name: str, kind: str) -> NewEvent:
    return NewEvent(kind, NOW, orjson.dumps({"n": 1}), "do", name)


async def test_a_commit_in_this_process_wakes_the_subscriber_at_once(fx: Fixture) -> None:
    fx.storage.appended.fallback_seconds = NO_POLL
    await fx.create("i1")
    record = await fx.get("i1")
    async with subscribed(fx.storage, record) as stream:
        assert (await next_event(stream))["type"] == "workflow_queued"
        claim = await fx.claim_one("i1")
        # Each path that appends: progress, queued progress (flushed later), consumed event,
        # the activation's end, an operator's action.
        await fx.storage.record_progress(claim, [step("a", "step_started")])
        assert (await next_event(stream))["type"] == "step_started"
        fx.storage.record_progress_nowait(claim, [step("a", "attempt_started")])
        assert (await next_event(stream))["type"] == "attempt_started"
        await fx.storage.deliver_event(record.pk, "go", b'{"x": 1}', NOW)
        done = NewEvent("wait_completed", NOW, b"{}", "wait", "w")
        assert await fx.storage.consume_event(claim, "go", done) is not None
        assert (await next_event(stream))["type"] == "wait_completed"
        paused = NewEvent("workflow_paused", NOW)
        await fx.storage.release_instance(claim, Release("paused", events=[paused]), NOW)
        assert (await next_event(stream))["type"] == "workflow_paused"
        ended = NewEvent("workflow_terminated", NOW)
        transition = Transition("terminated", ended=True, events=[ended])
        await fx.storage.transition_instance(record.pk, "paused", transition, NOW)
        assert (await next_event(stream))["type"] == "workflow_terminated"
        with pytest.raises(StopAsyncIteration):
            await anext(stream)


async def test_idle_subscribers_read_nothing_while_polls_go_by(fx: Fixture) -> None:
    signal = fx.storage.appended
    signal.fallback_seconds = 0.01
    await fx.create("i1", "i2")
    records = [await fx.get("i1"), await fx.get("i2")]
    loads = Counted(fx.storage, "load_events")
    polls = Counted(signal, "_latest")
    streams = [instance_events(ops_of(fx.storage), records[n % 2], 0) for n in range(40)]
    try:
        for stream in streams:
            assert (await next_event(stream))["type"] == "workflow_queued"
        # Each subscriber now waits (parked on its watch) once the tasks below have started.
        waiting = [asyncio.ensure_future(anext(stream)) for stream in streams]
        await wait_for(lambda: signal.parked() == len(streams))
        await signal.next_poll()  # between rounds from here: none is under way
        loads.calls = polls.calls = 0
        for _ in range(20):
            await signal.next_poll()
        assert loads.calls == 0
        assert polls.calls == 20  # one read a round, for all forty
        assert not any(task.done() for task in waiting)
        claim = await fx.claim_one("i1")
        await fx.storage.record_progress(claim, [step("a", "step_started")])
        woken = [task for n, task in enumerate(waiting) if n % 2 == 0]
        async with asyncio.timeout(PROMPT):
            got = await asyncio.gather(*woken)
        assert {data(frame)["type"] for frame in got} == {"step_started"}
        # One read each, by the twenty woken; the other twenty still read nothing.
        assert loads.calls == 20
        assert not any(task.done() for n, task in enumerate(waiting) if n % 2 == 1)
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        for stream in streams:
            await stream.aclose()
    assert signal.parked() == 0 and not signal.active


async def test_a_busy_instance_costs_its_subscriber_a_bounded_number_of_reads(
    fx: Fixture,
) -> None:
    fx.storage.appended.fallback_seconds = NO_POLL
    await fx.create("i1")
    record = await fx.get("i1")
    claim = await fx.claim_one("i1")
    loads = Counted(fx.storage, "load_events")
    steps = 200
    async with subscribed(fx.storage, record) as stream:
        assert (await next_event(stream))["type"] == "workflow_queued"

        async def read_all() -> list[str]:
            names: list[str] = []
            while len(names) < steps:
                names.append((await next_event(stream))["stepName"])
            return names

        reader = asyncio.ensure_future(read_all())
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(steps):  # one commit each
            await fx.storage.record_progress(claim, [step(f"s{n}", "step_started")])
        async with asyncio.timeout(PROMPT):
            names = await reader
        elapsed = loop.time() - started
    assert names == [f"s{n}" for n in range(steps)]
    # Reads woken by commits are at least MIN_READ_GAP_SECONDS apart, each taking every
    # event committed meanwhile (plus the first read of the history).
    assert loads.calls <= elapsed / MIN_READ_GAP_SECONDS + 3, (loads.calls, elapsed)


async def wait_for(condition: Any) -> None:
    """Until ``condition()`` holds (yielding to the loop), or fail after ``PROMPT`` seconds."""
    async with asyncio.timeout(PROMPT):
        while not condition():
            await asyncio.sleep(0.001)


@pytest.fixture
def other_process(backend_url: str) -> Iterator[str]:
    if backend_url.startswith("memory"):
        pytest.skip("an in-memory store has no other process")
    yield backend_url


async def test_another_processes_writes_and_deletes_arrive_through_the_poll(
    fx: Fixture, other_process: str
) -> None:
    fx.storage.appended.fallback_seconds = 0.05
    await fx.create("i1")
    record = await fx.get("i1")
    other = open_storage(other_process)
    await other.open()
    try:
        async with subscribed(fx.storage, record) as stream:
            assert (await next_event(stream))["type"] == "workflow_queued"
            claims = await other.claim_runnable("w2", 1, NOW, 30_000, [fx.workflow.pk])
            await other.record_progress(claims[0], [step("a", "step_started")])
            assert (await next_event(stream))["type"] == "step_started"
            assert await other.delete_instances(fx.workflow.pk, ["i1"]) == ["i1"]
            # The poll finds the instance gone: the stream ends.
            async with asyncio.timeout(PROMPT):
                with pytest.raises(StopAsyncIteration):
                    await anext(stream)
    finally:
        await other.close()
