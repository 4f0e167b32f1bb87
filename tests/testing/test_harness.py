"""The harness drives real workflows on a fake clock: nothing here waits in real time for a
workflow's sleeps, retry delays or event timeouts (the whole file runs in about a second)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stepstone import NonRetryableError
from stepstone.testing import HarnessError, WorkflowHarness
from tests.testing import flows

DAY_MS = 86_400_000


@pytest.fixture
async def harness() -> AsyncIterator[WorkflowHarness]:
    flows.CALLS.clear()
    async with await WorkflowHarness.open() as h:
        await h.register("approval", flows.Approval)
        await h.register("reminder", flows.Reminder)
        await h.register("fanout", flows.Fanout)
        yield h


async def test_create_runs_until_the_instance_waits(harness: WorkflowHarness) -> None:
    order = await harness.create("approval", {"sku": "B7"}, id="o1")
    assert (await order.status())["status"] == "waiting"
    reserve = await order.step("reserve")
    assert reserve.output == {"sku": "B7", "held": True}
    assert [a.success for a in reserve.attempts] == [True]
    wait = await order.step("approval")
    assert wait.kind == "waitForEvent" and not wait.done
    assert wait.wake_at == harness.now() + 2 * DAY_MS


async def test_send_event_resumes_and_the_output_is_there(harness: WorkflowHarness) -> None:
    order = await harness.create("approval", {"sku": "B7"})
    await order.send_event("approval", {"approved": True})
    status = await order.status()
    assert status == {
        "status": "complete",
        "error": None,
        "output": {"shipped": True, "tracking": "trk-B7"},
        "rollback": None,
    }
    assert [s.name for s in await order.steps()] == ["reserve-1", "approval-1", "ship-1"]
    assert (await order.step("approval")).output["payload"] == {"approved": True}


async def test_advance_fires_a_wait_timeout_at_once(harness: WorkflowHarness) -> None:
    order = await harness.create("approval")
    started = time.monotonic()
    await harness.advance("1 day")
    assert (await order.status())["status"] == "waiting"
    await harness.advance("1 day")
    assert await order.output() == {"shipped": False, "reason": "timeout"}
    assert time.monotonic() - started < 10  # two days of workflow time, no real wait
    assert (await order.step("approval")).error == {
        "name": "WorkflowTimeoutError",
        "message": "Execution timed out after 172800000ms",
    }


async def test_advance_ends_sleeps_and_runs_retries(harness: WorkflowHarness) -> None:
    reminder = await harness.create("reminder", {"failures": 2})
    assert (await reminder.step("cool off")).done is False
    await harness.advance("3 days")
    send = await reminder.step("send reminder")
    assert [a.success for a in send.attempts] == [False]
    assert send.attempts[0].error == {"name": "ConnectionError", "message": "mail server down"}
    await harness.advance("9 minutes")
    assert len((await reminder.step("send reminder")).attempts) == 1
    await harness.advance("1 minute")
    assert len((await reminder.step("send reminder")).attempts) == 2
    await harness.advance("10 minutes")
    assert await reminder.output() == {"sent": True, "attempt": 3}
    assert flows.CALLS == ["send 1", "send 2", "send 3"]


async def test_run_to_end_jumps_from_timer_to_timer(harness: WorkflowHarness) -> None:
    reminder = await harness.create("reminder", {"failures": 1})
    before = harness.now()
    status = await reminder.run_to_end()
    assert status["output"] == {"sent": True, "attempt": 2}
    assert harness.now() - before == 3 * DAY_MS + 10 * 60_000


async def test_a_mocked_step_returns_the_mock_and_its_body_never_runs(
    harness: WorkflowHarness,
) -> None:
    harness.mock_step("reserve", {"sku": "MOCK", "held": True})
    order = await harness.create("approval", {"sku": "B7"})
    await order.send_event("approval", {"approved": True})
    assert await order.output() == {"shipped": True, "tracking": "trk-MOCK"}
    assert flows.CALLS == ["ship"]
    assert (await order.step("reserve")).output == {"sku": "MOCK", "held": True}
    assert harness.step_calls("reserve") == 1


async def test_a_mock_function_sees_ctx(harness: WorkflowHarness) -> None:
    harness.mock_step("send reminder", function=lambda ctx: {"mocked": ctx["attempt"]})
    reminder = await harness.create("reminder")
    await harness.advance("3 days")
    assert await reminder.output() == {"mocked": 1}


async def test_an_injected_failure_is_retried_by_the_steps_config(
    harness: WorkflowHarness,
) -> None:
    harness.fail_step("send reminder", TimeoutError("injected"), times=2)
    reminder = await harness.create("reminder")
    status = await reminder.run_to_end()
    assert status["output"] == {"sent": True, "attempt": 3}
    errors = [a.error for a in (await reminder.step("send reminder")).attempts]
    assert errors[:2] == [{"name": "TimeoutError", "message": "injected"}] * 2
    assert flows.CALLS == ["send 3"]  # the body ran only once the injected failures ran out


async def test_an_injected_non_retryable_failure_fails_the_instance(
    harness: WorkflowHarness,
) -> None:
    harness.fail_step("reserve", NonRetryableError("card declined"), workflow="approval")
    order = await harness.create("approval")
    status = await order.status()
    assert status["status"] == "errored"
    assert status["error"] == {"name": "NonRetryableError", "message": "card declined"}
    assert len((await order.step("reserve")).attempts) == 1


async def test_overrides_reach_parallel_branches_and_direct_calls(
    harness: WorkflowHarness,
) -> None:
    harness.mock_step("fetch b", {"name": "bbbb", "size": 4})
    fan = await harness.create("fanout", {"names": ["a", "b"]})
    assert await fan.output() == {"rows": 2, "bytes": 5}


async def test_an_unknown_step_is_a_clear_error(harness: WorkflowHarness) -> None:
    order = await harness.create("approval")
    with pytest.raises(HarnessError, match=r"no step 'nope'.*recorded: do 'reserve-1'"):
        await order.step("nope")


async def test_the_clock_starts_at_a_fixed_time() -> None:
    async with await WorkflowHarness.open(start=1_000_000_000_000) as h:
        assert h.now() == 1_000_000_000_000
    async with await WorkflowHarness.open() as h:
        assert h.now() == 1_767_225_600_000


async def test_a_long_advance_passes_every_retry_on_its_way(harness: WorkflowHarness) -> None:
    harness.fail_step("send reminder", ConnectionError("still down"), times=10)
    reminder = await harness.create("reminder")
    await harness.advance("3 days")
    sleep_end = harness.now()
    await harness.advance("1 day")  # attempts at +0, +10, +20 and +30 minutes, all failing
    send = await reminder.step("send reminder")
    assert [a.start - sleep_end for a in send.attempts] == [0, 600_000, 1_200_000, 1_800_000]
    assert (await reminder.status())["error"] == {
        "name": "ConnectionError",
        "message": "still down",
    }
    assert harness.now() == sleep_end + DAY_MS


async def test_a_paused_instance_holds_its_timers_until_resumed(
    harness: WorkflowHarness,
) -> None:
    order = await harness.create("approval")
    await order.pause()
    assert (await order.status())["status"] == "paused"
    await harness.advance("3 days")
    assert (await order.status())["status"] == "paused"
    await order.resume()
    # The wait's deadline moved by the time spent paused: it still has its two days.
    assert (await order.status())["status"] == "waiting"
    await harness.advance("2 days")
    assert await order.output() == {"shipped": False, "reason": "timeout"}


async def test_terminate_and_restart_through_the_harness(harness: WorkflowHarness) -> None:
    order = await harness.create("approval", {"sku": "T"})
    await order.terminate()
    assert (await order.status())["status"] == "terminated"
    await order.restart()
    await order.send_event("approval", {"approved": True})
    assert await order.output() == {"shipped": True, "tracking": "trk-T"}
    assert flows.CALLS == ["reserve", "reserve", "ship"]


async def test_a_config_whose_module_cannot_import_fails_at_open(tmp_path: Path) -> None:
    config = tmp_path / "stepstone.toml"
    config.write_text('[[workflows]]\nname = "x"\nclass_name = "X"\nscript_name = "no_such_mod"\n')
    with pytest.raises(HarnessError, match=r"x: cannot import module 'no_such_mod'"):
        await WorkflowHarness.open(config)


async def test_a_class_defined_in_a_test_can_be_registered() -> None:
    class Local(flows.Approval):
        pass

    async with await WorkflowHarness.open() as h:
        await h.register("local", Local)
        run = await h.create("local", {"sku": "L"})
        assert (await run.step("reserve")).output == {"sku": "L", "held": True}
