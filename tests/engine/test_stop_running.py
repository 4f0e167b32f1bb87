"""Terminate, restart and delete stop the step body that is running (issue 11).

Each test holds a step open on an explicit signal (the body sets ``started`` when it runs and
``cancelled`` in its ``except CancelledError``), stops the instance, and checks that the body
was cancelled within the issue's bound, that nothing of the old run is recorded afterwards,
and, for a restart, that the old and the new run never overlapped.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from stepstone import Engine, WorkflowEntrypoint
from stepstone.ops import ABORTED_BY_TERMINATE, end_running_attempts
from stepstone.storage.base import NewEvent, NewInstance, Storage, Transition, WorkflowDefinition
from tests.engine.conftest import steps_of

# The bound for a body running in the same process.
SAME_PROCESS_BOUND_S = 1.0
LATENCIES: dict[str, list[float]] = {}


@dataclass
class Probe:
    """What the step bodies of one instance did, observed from the test."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled_at: float | None = None
    starts: list[float] = field(default_factory=list)
    running: int = 0
    most_running: int = 0
    finished: int = 0
    thread_done: threading.Event = field(default_factory=threading.Event)
    release_thread: threading.Event = field(default_factory=threading.Event)


PROBES: dict[str, Probe] = {}


def probe(instance_id: str) -> Probe:
    return PROBES.setdefault(instance_id, Probe())


class Chain(WorkflowEntrypoint):
    """``link 1`` returns at once; ``link 2`` blocks on its first run and returns on later ones."""

    async def run(self, event: Any, step: Any) -> Any:
        p = probe(event.instance_id)

        async def link_1() -> str:
            return "one"

        async def link_2() -> str:
            p.starts.append(time.monotonic())
            p.running += 1
            p.most_running = max(p.most_running, p.running)
            try:
                p.started.set()
                if len(p.starts) == 1:
                    await asyncio.Event().wait()
                await asyncio.sleep(0.05)
                p.finished += 1
                return "two"
            except asyncio.CancelledError:
                p.cancelled_at = time.monotonic()
                p.cancelled.set()
                raise
            finally:
                p.running -= 1

        first = await step.do("link 1", link_1)
        second = await step.do("link 2", link_2)
        return [first, second]


class Threaded(WorkflowEntrypoint):
    """A plain function step: it runs in a thread, which nothing can interrupt."""

    async def run(self, event: Any, step: Any) -> Any:
        p = probe(event.instance_id)
        loop = asyncio.get_running_loop()

        def blocking() -> str:
            loop.call_soon_threadsafe(p.started.set)
            p.release_thread.wait(10)
            p.thread_done.set()
            return "late"

        return await step.do("blocking", blocking)


@pytest.fixture
async def stops(engine: Engine) -> Engine:
    PROBES.clear()
    await engine.register("chain", Chain)
    await engine.register("threaded", Threaded)
    return engine


async def started(instance_id: str) -> Probe:
    p = probe(instance_id)
    async with asyncio.timeout(10):
        await p.started.wait()
    return p


async def recorded(engine: Engine, workflow: str, instance_id: str, step: str) -> None:
    """Until the record shows the step's attempt (its start is written without waiting)."""
    async with asyncio.timeout(10):
        while not (await steps_of(engine, workflow, instance_id)).get(("do", step)):
            await asyncio.sleep(0.005)


async def cancelled_within_bound(p: Probe, since: float, what: str) -> float:
    async with asyncio.timeout(SAME_PROCESS_BOUND_S):
        await p.cancelled.wait()
    assert p.cancelled_at is not None
    latency = p.cancelled_at - since
    LATENCIES.setdefault(what, []).append(latency)
    print(f"{what}: step body cancelled {latency * 1000:.1f} ms after the call")
    return latency


async def settled(engine: Engine) -> None:
    """Until the worker holds no activation (the stopped one has unwound)."""
    assert engine.worker is not None
    async with asyncio.timeout(10):
        while engine.worker.active_count:
            await asyncio.sleep(0.01)


async def test_terminate_cancels_the_running_step_and_records_the_attempt(
    stops: Engine,
) -> None:
    handle = await stops.workflow("chain").create(id="t1")
    p = await started("t1")
    since = time.monotonic()
    await handle.terminate()
    await cancelled_within_bound(p, since, "terminate")
    assert (await handle.status())["status"] == "terminated"
    await settled(stops)
    link = (await steps_of(stops, "chain", "t1"))[("do", "link 2-1")]
    # Recorded as ended by the terminate, in Cloudflare's words; never retried.
    assert [(a.attempt, a.success, a.error) for a in link.attempts] == [
        (1, False, ABORTED_BY_TERMINATE)
    ]
    assert not link.done
    assert len(p.starts) == 1 and p.finished == 0


async def test_restart_never_runs_the_old_and_the_new_activation_at_once(stops: Engine) -> None:
    handle = await stops.workflow("chain").create(id="r1")
    p = await started("r1")
    since = time.monotonic()
    await handle.restart()
    await cancelled_within_bound(p, since, "restart")
    assert (await handle.wait(10))["output"] == ["one", "two"]
    assert len(p.starts) == 2 and p.most_running == 1
    assert p.cancelled_at is not None and p.starts[1] >= p.cancelled_at
    steps = await steps_of(stops, "chain", "r1")
    # Nothing of the old run was written after the restart dropped its record.
    link = steps[("do", "link 2-1")]
    assert [(a.attempt, a.success) for a in link.attempts] == [(1, True)]


async def test_restart_from_a_step_cancels_the_old_run_first(stops: Engine) -> None:
    handle = await stops.workflow("chain").create(id="r2")
    p = await started("r2")
    await recorded(stops, "chain", "r2", "link 2-1")
    since = time.monotonic()
    await handle.restart(from_={"name": "link 2"})
    await cancelled_within_bound(p, since, "restart from a step")
    assert (await handle.wait(10))["output"] == ["one", "two"]
    assert len(p.starts) == 2 and p.most_running == 1
    link = (await steps_of(stops, "chain", "r2"))[("do", "link 2-1")]
    assert [(a.attempt, a.success) for a in link.attempts] == [(1, True)]


async def test_terminate_with_rollback_runs_after_the_body_is_cancelled(stops: Engine) -> None:
    handle = await stops.workflow("chain").create(id="tr")
    p = await started("tr")
    since = time.monotonic()
    await handle.terminate(rollback=True)
    await cancelled_within_bound(p, since, "terminate with rollback")
    assert (await handle.wait(10))["status"] == "terminated"
    await settled(stops)
    assert len(p.starts) == 1 and p.finished == 0


async def test_deleting_the_instance_cancels_its_running_step(stops: Engine) -> None:
    handle = await stops.workflow("chain").create(id="d1")
    p = await started("d1")
    since = time.monotonic()
    await handle.delete()
    await cancelled_within_bound(p, since, "instance delete")
    await settled(stops)
    assert len(p.starts) == 1 and p.finished == 0


async def test_deleting_the_workflow_cancels_its_running_steps(stops: Engine) -> None:
    await stops.workflow("chain").create(id="w1")
    await stops.workflow("chain").create(id="w2")
    probes = [await started("w1"), await started("w2")]
    since = time.monotonic()
    await stops.ops.delete_workflow("default", "chain")
    for p in probes:
        await cancelled_within_bound(p, since, "workflow delete")
    await settled(stops)
    assert all(p.finished == 0 for p in probes)


async def test_a_thread_step_is_abandoned_and_its_result_fenced_out(stops: Engine) -> None:
    handle = await stops.workflow("threaded").create(id="th")
    p = await started("th")
    await handle.terminate()
    await settled(stops)  # the coroutine gave up on the thread without waiting for it
    assert not p.thread_done.is_set()
    p.release_thread.set()
    await asyncio.to_thread(p.thread_done.wait, 10)
    await asyncio.sleep(0.1)
    step = (await steps_of(stops, "threaded", "th"))[("do", "blocking-1")]
    assert not step.done and step.output is None
    assert [(a.success, a.error) for a in step.attempts] == [(False, ABORTED_BY_TERMINATE)]


# --- the storage side: the lease outlives the stop until its holder hands it back ----------

NOW = 1_700_000_000_000
LEASE = 30_000


async def test_a_stopped_lease_blocks_claims_until_released(storage: Storage) -> None:
    heard: list[tuple[int, int | None]] = []
    storage.add_control_listener(lambda pk, epoch: heard.append((pk, epoch)))
    workflow = await storage.register_workflow(
        "acct", "orders", WorkflowDefinition("OrderWorkflow", "shop.orders"), NOW
    )
    await storage.create_instances(
        workflow.pk, workflow.version.id, [NewInstance("i", b"{}")], NOW, skip_existing=False
    )
    [claim] = await storage.claim_runnable("w1", 1, NOW, LEASE, [workflow.pk])
    pk = claim.instance.pk
    restart = Transition("queued", runnable=True, release_worker=True, reset_history=True)
    await storage.transition_instance(pk, "running", restart, NOW + 1)
    assert (pk, claim.epoch + 1) in heard
    # Runnable, but the old holder has not stopped yet: nobody may claim it.
    assert await storage.claim_runnable("w2", 1, NOW + 2, LEASE, [workflow.pk]) == []
    await storage.release_stopped("someone-else", pk, claim.epoch + 1)
    await storage.release_stopped("w1", pk, claim.epoch)  # not the stop's epoch
    assert await storage.claim_runnable("w2", 1, NOW + 3, LEASE, [workflow.pk]) == []
    await storage.release_stopped("w1", pk, claim.epoch + 1)
    [fresh] = await storage.claim_runnable("w2", 1, NOW + 4, LEASE, [workflow.pk])
    assert fresh.epoch == claim.epoch + 2
    # A late hand-back of the old claim cannot free the new one.
    await storage.release_stopped("w1", pk, claim.epoch + 1)
    assert await storage.renew_leases("w2", [fresh], NOW + 5, LEASE) == {pk: "running"}


async def test_a_stopped_lease_that_is_never_handed_back_expires(storage: Storage) -> None:
    workflow = await storage.register_workflow(
        "acct", "orders", WorkflowDefinition("OrderWorkflow", "shop.orders"), NOW
    )
    await storage.create_instances(
        workflow.pk, workflow.version.id, [NewInstance("i", b"{}")], NOW, skip_existing=False
    )
    [claim] = await storage.claim_runnable("w1", 1, NOW, LEASE, [workflow.pk])
    restart = Transition("queued", runnable=True, release_worker=True, reset_history=True)
    await storage.transition_instance(claim.instance.pk, "running", restart, NOW + 1)
    assert await storage.renew_leases("w1", [claim], NOW + 2, LEASE) == {claim.instance.pk: None}
    [fresh] = await storage.claim_runnable("w2", 1, NOW + LEASE + 1, LEASE, [workflow.pk])
    assert fresh.instance.id == "i"


async def test_the_running_attempt_is_closed_in_the_stopping_transaction(
    storage: Storage,
) -> None:
    workflow = await storage.register_workflow(
        "acct", "orders", WorkflowDefinition("OrderWorkflow", "shop.orders"), NOW
    )
    await storage.create_instances(
        workflow.pk, workflow.version.id, [NewInstance("i", b"{}")], NOW, skip_existing=False
    )
    [claim] = await storage.claim_runnable("w1", 1, NOW, LEASE, [workflow.pk])
    pk = claim.instance.pk
    await storage.record_progress(
        claim,
        [
            NewEvent("step_started", NOW, b'{"config":{}}', "do", "a-1"),
            NewEvent("attempt_started", NOW, b'{"attempt":1}', "do", "a-1"),
            NewEvent("step_started", NOW, b'{"config":{}}', "do", "b-1"),
            NewEvent("attempt_started", NOW, b'{"attempt":1}', "do", "b-1"),
            NewEvent("attempt_completed", NOW, b'{"attempt":1}', "do", "b-1"),
            NewEvent("step_completed", NOW, b'{"output":1}', "do", "b-1"),
        ],
    )
    terminate = Transition(
        "terminated",
        release_worker=True,
        ended=True,
        closing=end_running_attempts(ABORTED_BY_TERMINATE, NOW + 1),
        events=[NewEvent("workflow_terminated", NOW + 1)],
    )
    await storage.transition_instance(pk, "running", terminate, NOW + 1)
    events: Sequence[Any] = await storage.load_events(pk)
    assert [(e.type, e.step_name) for e in events][-2:] == [
        ("attempt_errored", "a-1"),
        ("workflow_terminated", None),
    ]
    assert orjson.loads(events[-2].data) == {"attempt": 1, "error": ABORTED_BY_TERMINATE}
