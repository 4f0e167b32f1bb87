"""What replay detects when the code changes under a running instance (issue 11).

Steps are matched by kind and visible name (``name-N``), as Cloudflare caches them by name.
Each test is one row of the table in docs/authoring.md ("What replay detects"): version 1 of
the code runs until it waits for an event, version 2 replaces it, the event resumes the
instance, and the test asserts what happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stepstone import Engine, InstanceHandle
from tests.engine import saga_flows
from tests.engine.conftest import steps_of, wait_for

WORKFLOW = "evolving"
Plan = list[tuple[str, str, Any]]


@pytest.fixture
async def evolving(engine: Engine) -> AsyncIterator[Engine]:
    saga_flows.SEEN.clear()
    saga_flows.PLANS.clear()
    await engine.register(WORKFLOW, saga_flows.Evolving)
    yield engine


def do(name: str, config: Any = None) -> tuple[str, str, Any]:
    return ("do", name, config)


WAIT = ("wait", "hold", None)


async def deploy(engine: Engine, instance_id: str, v1: Plan, v2: Plan) -> InstanceHandle:
    """Run ``v1`` until it waits for the event, then resume the instance on ``v2``."""
    saga_flows.PLANS[instance_id] = (1, v1)
    handle = await engine.workflow(WORKFLOW).create(id=instance_id)
    await wait_for(handle, "waiting")
    saga_flows.PLANS[instance_id] = (2, v2)
    await handle.send_event(type="go", payload=None)
    return handle


async def assert_nondeterminism(handle: InstanceHandle, asked: str, recorded: str) -> None:
    status = await handle.wait(10)
    assert status["status"] == "errored"
    assert status["error"]["name"] == "NondeterminismError"
    message = status["error"]["message"]
    assert f"asked for {asked}" in message and f"recorded history has {recorded}" in message
    assert status["rollback"] is None


async def test_a_step_added_before_recorded_ones_is_detected(evolving: Engine) -> None:
    handle = await deploy(evolving, "added-before", [do("a"), WAIT], [do("x"), do("a"), WAIT])
    await assert_nondeterminism(handle, 'step.do "x-1"', 'step.do "a-1"')


async def test_a_step_added_after_the_recorded_ones_just_runs(evolving: Engine) -> None:
    handle = await deploy(evolving, "added-after", [do("a"), WAIT], [do("a"), WAIT, do("x")])
    # a's recorded output is returned: the changed code of a recorded step never runs.
    assert (await handle.wait(10))["output"] == ["a@1", "x@2"]


async def test_a_removed_step_is_detected_at_the_next_new_step(evolving: Engine) -> None:
    handle = await deploy(
        evolving, "removed-then-new", [do("a"), do("b"), WAIT], [do("b"), WAIT, do("c")]
    )
    await assert_nondeterminism(handle, 'step.do "c-1"', 'step.do "a-1"')


async def test_a_removed_step_is_not_detected_if_no_new_step_follows(evolving: Engine) -> None:
    handle = await deploy(evolving, "removed", [do("a"), do("b"), WAIT], [do("b"), WAIT])
    assert (await handle.wait(10))["output"] == ["b@1"]


async def test_a_renamed_step_is_detected(evolving: Engine) -> None:
    handle = await deploy(evolving, "renamed", [do("a"), WAIT], [do("z"), WAIT])
    await assert_nondeterminism(handle, 'step.do "z-1"', 'step.do "a-1"')


async def test_reordered_steps_are_not_detected(evolving: Engine) -> None:
    handle = await deploy(evolving, "reordered", [do("a"), do("b"), WAIT], [do("b"), do("a"), WAIT])
    # Matched by name: each step returns its own recorded output, in the new order.
    assert (await handle.wait(10))["output"] == ["b@1", "a@1"]


async def test_a_changed_kind_under_the_same_name_is_detected(evolving: Engine) -> None:
    handle = await deploy(evolving, "kind", [do("x"), WAIT], [("sleep", "x", 10), WAIT])
    await assert_nondeterminism(handle, 'step.sleep "x-1"', 'step.do "x-1"')


async def test_a_changed_config_is_ignored_for_a_recorded_step(evolving: Engine) -> None:
    config = {"retries": {"limit": 0, "delay": 1}, "timeout": "1 second"}
    handle = await deploy(evolving, "config", [do("a"), WAIT], [do("a", config), WAIT])
    assert (await handle.wait(10))["output"] == ["a@1"]
    record = (await steps_of(evolving, WORKFLOW, "config"))[("do", "a-1")]
    assert record.config is not None and record.config["retries"]["limit"] == 5


async def test_a_changed_sleep_duration_keeps_the_recorded_wake_up(evolving: Engine) -> None:
    saga_flows.PLANS["sleep"] = (1, [do("a"), ("sleep", "nap", "1 hour")])
    handle = await evolving.workflow(WORKFLOW).create(id="sleep")
    await wait_for(handle, "waiting")
    saga_flows.PLANS["sleep"] = (2, [do("a"), ("sleep", "nap", 10)])
    await handle.pause()
    await handle.resume()  # runnable again: the next activation replays on version 2
    async with asyncio.timeout(10):
        while "run@2" not in saga_flows.SEEN["sleep"]:
            await asyncio.sleep(0.01)
    await wait_for(handle, "waiting")
    nap = (await steps_of(evolving, WORKFLOW, "sleep"))[("sleep", "nap-1")]
    # Still an hour after its start (the pause shifted it by the paused time), not 10 ms.
    assert nap.wake_at is not None and nap.wake_at - nap.start >= 3_600_000
    assert not nap.done
