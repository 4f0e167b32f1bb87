"""Waiting, events, pause/resume, terminate, rollback and restart, per spec 7.5-7.13."""

from __future__ import annotations

import asyncio

import pytest

from stepstone import Engine, WorkerSettings
from stepstone.engine.clock import ManualClock
from stepstone.errors import CannotRestart, CannotSendEvent, CannotTerminate, InvalidAction
from stepstone.ops import RestartFrom
from tests.engine import flows
from tests.engine.conftest import steps_of, wait_for


async def test_a_sleeping_instance_is_a_row_not_a_task(engine: Engine) -> None:
    handle = await engine.workflow("sleeper").create(id="s1", params={"ms": 300})
    await wait_for(handle, "waiting")
    assert engine.worker is not None
    await asyncio.sleep(0.05)
    assert engine.worker.active_count == 0
    assert (await handle.wait(10))["output"] == "woke"
    sleep = (await steps_of(engine, "sleeper", "s1"))[("sleep", "nap-1")]
    assert sleep.done
    assert sleep.end is not None and sleep.wake_at is not None and sleep.end >= sleep.wake_at


async def test_events_are_buffered_fifo_per_type_even_before_the_wait(engine: Engine) -> None:
    handle = await engine.workflow("approval").create(id="a1")
    await handle.send_event(type="approval", payload={"n": 1})
    await handle.send_event(type="other", payload="ignored")
    await handle.send_event(type="approval", payload={"n": 2})
    assert (await handle.wait(10))["output"] == [{"n": 1}, {"n": 2}, "approval"]


async def test_event_sent_while_waiting_wakes_the_instance(engine: Engine) -> None:
    handle = await engine.workflow("approval").create(id="a2")
    await wait_for(handle, "waiting")
    await handle.send_event(type="approval", payload=1)
    await asyncio.sleep(0.1)
    await handle.send_event(type="approval", payload=2)
    assert (await handle.wait(10))["output"] == [1, 2, "approval"]


async def test_wait_timeout_raises_a_catchable_timeout_error(engine: Engine) -> None:
    handle = await engine.workflow("approval").create(id="a3", params={"timeout": "1 second"})
    status = await handle.wait(10)
    assert status["output"] == {"timed_out": "Execution timed out after 1000ms"}
    wait = (await steps_of(engine, "approval", "a3"))[("waitForEvent", "first-1")]
    assert wait.success is False
    assert wait.error == {
        "name": "WorkflowTimeoutError",
        "message": "Execution timed out after 1000ms",
    }


async def test_events_to_finished_instances_are_refused(engine: Engine) -> None:
    handle = await engine.workflow("sequential").create(id="done", params={"n": 1})
    await handle.wait(10)
    with pytest.raises(CannotSendEvent):
        await handle.send_event(type="late", payload=None)


async def test_pause_lets_the_running_step_finish_then_parks(engine: Engine) -> None:
    handle = await engine.workflow("blocking").create(id="p1", params={"gate": "p1"})
    async with asyncio.timeout(10):
        while flows.CALLS["hold-p1"] == 0:
            await asyncio.sleep(0.01)
    await handle.pause()
    assert (await handle.status())["status"] == "waitingForPause"
    flows.gate("p1").set()
    await wait_for(handle, "paused")
    steps = await steps_of(engine, "blocking", "p1")
    assert steps[("do", "hold-1")].success is True
    assert ("do", "after-1") not in steps  # no new step starts once a pause is pending
    await handle.resume()
    assert (await handle.wait(10))["output"] == ["held", "after"]
    assert flows.CALLS["hold-p1"] == 1


async def test_resume_shifts_the_sleep_by_the_paused_time(backend_url: str) -> None:
    # The engine's clock moves only when told: the pause lasts exactly 600 ms of it, longer
    # than the whole sleep, and the sleep can end only once the clock passes the shifted wake.
    clock = ManualClock()
    engine = await Engine.open(
        backend_url, clock=clock, worker_settings=WorkerSettings(concurrency=20, poll_ms=25)
    )
    try:
        await engine.register("sleeper", flows.Sleeper)
        handle = await engine.workflow("sleeper").create(id="p2", params={"ms": 400})
        await wait_for(handle, "waiting")
        planned = (await steps_of(engine, "sleeper", "p2"))[("sleep", "nap-1")].wake_at
        assert planned == clock.now_ms() + 400
        await handle.pause()
        assert (await handle.status())["status"] == "paused"
        clock.advance(600)
        await handle.resume()
        nap = (await steps_of(engine, "sleeper", "p2"))[("sleep", "nap-1")]
        assert nap.wake_at == planned + 600
        # The worker takes the resumed instance up again and parks it on the shifted sleep.
        await wait_for(handle, "waiting")
        assert ("do", "after-1") not in await steps_of(engine, "sleeper", "p2")
        clock.advance(400)
        assert (await handle.wait(10))["output"] == "woke"
        nap = (await steps_of(engine, "sleeper", "p2"))[("sleep", "nap-1")]
        assert nap.end is not None and nap.end >= nap.wake_at
    finally:
        await engine.close()


async def test_pause_and_resume_rules(engine: Engine) -> None:
    handle = await engine.workflow("sequential").create(id="p3", params={"n": 1})
    await handle.wait(10)
    with pytest.raises(InvalidAction):
        await handle.pause()
    await handle.resume()  # a no-op on a finished instance
    assert (await handle.status())["status"] == "complete"


async def test_terminate_stops_a_running_step_and_records_why(engine: Engine) -> None:
    handle = await engine.workflow("blocking").create(id="t1", params={"gate": "t1"})
    async with asyncio.timeout(10):
        # An attempt's start is recorded without waiting (it lingers for the completion), so
        # wait for the record too: what is checked is that the abandoned attempt ends there.
        while flows.CALLS["hold-t1"] == 0 or ("do", "hold-1") not in await steps_of(
            engine, "blocking", "t1"
        ):
            await asyncio.sleep(0.01)
    await handle.terminate()
    assert (await handle.status())["status"] == "terminated"
    flows.gate("t1").set()
    # The abandoned attempt is over once its body and its activation are gone: anything it
    # could still record is recorded by then.
    assert engine.worker is not None
    async with asyncio.timeout(10):
        while flows.CALLS["holding"] or engine.worker.active_count:
            await asyncio.sleep(0.01)
    steps = await steps_of(engine, "blocking", "t1")
    assert steps[("do", "hold-1")].done is False  # the abandoned attempt records nothing
    with pytest.raises(CannotTerminate):
        await handle.terminate()


async def test_failure_runs_rollbacks_newest_first(engine: Engine) -> None:
    handle = await engine.workflow("saga").create(id="r1")
    status = await handle.wait(10)
    assert status["status"] == "errored"
    assert status["error"] == {"name": "NonRetryableError", "message": "warehouse closed"}
    assert status["rollback"] == {"outcome": "complete", "error": None}
    steps = await steps_of(engine, "saga", "r1")
    rollbacks = [
        s for s in sorted(steps.values(), key=lambda s: s.first_event_id) if s.kind == "rollback"
    ]
    assert [s.name for s in rollbacks] == ["charge-1", "reserve-1"]
    assert flows.CALLS["undo-r1-charge"] == flows.CALLS["undo-r1-reserve"] == 1


async def test_a_failing_rollback_halts_the_chain(engine: Engine) -> None:
    handle = await engine.workflow("saga").create(id="r2", params={"undo_fails": True})
    status = await handle.wait(10)
    assert status["rollback"] == {
        "outcome": "failed",
        "error": {"name": "NonRetryableError", "message": "cannot release"},
    }


async def test_terminate_with_rollback_compensates_completed_steps(engine: Engine) -> None:
    handle = await engine.workflow("saga").create(id="r3", params={"wait": True})
    await wait_for(handle, "waiting")
    await handle.terminate(rollback=True)
    status = await wait_for(handle, "terminated")
    assert status["rollback"] == {"outcome": "complete", "error": None}
    assert flows.CALLS["undo-r3-charge"] == flows.CALLS["undo-r3-reserve"] == 1


async def test_restart_runs_everything_again(engine: Engine) -> None:
    handle = await engine.workflow("restartable").create(id="x1")
    await wait_for(handle, "waiting")
    await handle.restart()
    await wait_for(handle, "waiting")
    assert flows.CALLS["x1-a"] == flows.CALLS["x1-b"] == 2
    await handle.send_event(type="go", payload=None)
    assert (await handle.wait(10))["output"] == ["a", "b", "c"]


async def test_restart_from_a_step_keeps_the_earlier_ones(engine: Engine) -> None:
    handle = await engine.workflow("restartable").create(id="x2")
    await handle.send_event(type="go", payload=None)
    await handle.wait(10)
    await handle.restart(from_={"name": "b"})
    await wait_for(handle, "waiting")
    assert flows.CALLS["x2-a"] == 1
    assert flows.CALLS["x2-b"] == 2
    await handle.send_event(type="go", payload=None)
    assert (await handle.wait(10))["output"] == ["a", "b", "c"]
    assert flows.CALLS["x2-c"] == 2


async def test_restart_from_an_unknown_step_changes_nothing(engine: Engine) -> None:
    handle = await engine.workflow("restartable").create(id="x3")
    await wait_for(handle, "waiting")
    with pytest.raises(CannotRestart, match='Step "zzz" not found'):
        await engine.ops.restart("default", "restartable", "x3", from_=RestartFrom("zzz"))
    assert (await handle.status())["status"] == "waiting"
    assert len(await steps_of(engine, "restartable", "x3")) == 3


async def test_changed_code_fails_with_a_nondeterminism_error(engine: Engine) -> None:
    flows.VARIANT["diverge"] = "a"
    handle = await engine.workflow("diverging").create(id="nd")
    await wait_for(handle, "waiting")
    flows.VARIANT["diverge"] = "b"
    try:
        await handle.send_event(type="go", payload=None)
        status = await handle.wait(10)
    finally:
        flows.VARIANT["diverge"] = "a"
    assert status["status"] == "errored"
    assert status["error"]["name"] == "NondeterminismError"
    assert 'step.do "b-1"' in status["error"]["message"]
    assert 'step.do "a-1"' in status["error"]["message"]


async def test_delete_removes_the_instance_and_its_id_can_be_reused(engine: Engine) -> None:
    handle = await engine.workflow("approval").create(id="del")
    await wait_for(handle, "waiting")
    await handle.delete()
    again = await engine.workflow("approval").create(id="del", params={"timeout": "1 second"})
    assert (await again.wait(10))["output"]["timed_out"]


async def test_a_draining_worker_lets_the_running_step_finish(backend_url: str) -> None:
    if backend_url == "memory://":
        pytest.skip("an in-memory store does not outlive its engine")
    flows.CALLS.clear()
    flows.GATES.clear()
    settings = WorkerSettings(poll_ms=20)
    first = await Engine.open(backend_url, worker_settings=settings)
    await first.register("blocking", flows.Blocking)
    handle = await first.workflow("blocking").create(id="drain", params={"gate": "drain"})
    async with asyncio.timeout(10):
        while flows.CALLS["hold-drain"] == 0:
            await asyncio.sleep(0.01)
    asyncio.get_running_loop().call_later(0.2, flows.gate("drain").set)
    await first.close(drain_seconds=5)

    second = await Engine.open(backend_url, run_worker=False)
    try:
        steps = await steps_of(second, "blocking", "drain")
        assert steps[("do", "hold-1")].success is True
        assert ("do", "after-1") not in steps  # nothing new started while draining
    finally:
        await second.close()
    third = await Engine.open(backend_url, worker_settings=settings)
    try:
        resumed = await third.workflow("blocking").get(handle.id)
        assert (await resumed.wait(10))["output"] == ["held", "after"]
        assert flows.CALLS["hold-drain"] == 1
    finally:
        await third.close()
