"""Rollbacks compensate only the steps that started, newest start first, each with its own
output (issue 11), on every storage backend, through the real engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from stepstone import Engine
from stepstone.model import history as h
from tests.engine import saga_flows
from tests.engine.conftest import steps_of, wait_for

WORKFLOW = "three-steps"


@pytest.fixture
async def saga(engine: Engine) -> AsyncIterator[Engine]:
    saga_flows.SEEN.clear()
    await engine.register(WORKFLOW, saga_flows.ThreeSteps)
    yield engine


async def rollback_names(engine: Engine, instance_id: str) -> list[str]:
    steps = await steps_of(engine, WORKFLOW, instance_id)
    ordered = sorted(steps.values(), key=lambda s: s.first_event_id)
    return [s.name for s in ordered if s.kind == h.ROLLBACK]


async def total_steps_announced(engine: Engine, instance_id: str) -> int:
    _, record = await engine.ops.instance("default", WORKFLOW, instance_id)
    events = await engine.storage.load_events(record.pk)
    started = [orjson.loads(e.data or b"") for e in events if e.type == "rollback_started"]
    assert len(started) == 1
    return int(started[0]["totalSteps"])


@pytest.mark.parametrize("pause", ["sleep", "wait"])
async def test_terminate_while_waiting_compensates_only_the_steps_that_started(
    saga: Engine, pause: str
) -> None:
    instance_id = f"term-{pause}"
    handle = await saga.workflow(WORKFLOW).create(id=instance_id, params={"pause": pause})
    await wait_for(handle, "waiting")
    await handle.terminate(rollback=True)
    status = await wait_for(handle, "terminated")
    assert status["rollback"] == {"outcome": "complete", "error": None}
    # ship never started: its handler does not run, with output None or otherwise.
    assert saga_flows.SEEN[instance_id] == [
        ("charge", {"id": "c1"}, "StepError"),
        ("reserve", {"id": "r1"}, "StepError"),
    ]
    assert await rollback_names(saga, instance_id) == ["charge-1", "reserve-1"]
    assert await total_steps_announced(saga, instance_id) == 2


async def test_steps_run_in_this_activation_give_their_real_output(saga: Engine) -> None:
    handle = await saga.workflow(WORKFLOW).create(id="live", params={"fail_after": True})
    status = await handle.wait(10)
    assert status["status"] == "errored"
    assert status["rollback"] == {"outcome": "complete", "error": None}
    assert saga_flows.SEEN["live"] == [
        ("ship", {"id": "s1"}, "ValueError"),
        ("charge", {"id": "c1"}, "ValueError"),
        ("reserve", {"id": "r1"}, "ValueError"),
    ]
    assert await rollback_names(saga, "live") == ["ship-1", "charge-1", "reserve-1"]


async def test_replayed_and_live_steps_both_give_their_output(saga: Engine) -> None:
    # The sleep ends the first activation; the second replays reserve and charge from the
    # record and runs ship live before failing.
    handle = await saga.workflow(WORKFLOW).create(
        id="mixed", params={"pause": "sleep", "sleep_ms": 50, "fail_after": True}
    )
    status = await handle.wait(10)
    assert status["status"] == "errored"
    assert [entry[:2] for entry in saga_flows.SEEN["mixed"]] == [
        ("ship", {"id": "s1"}),
        ("charge", {"id": "c1"}),
        ("reserve", {"id": "r1"}),
    ]


async def test_a_failed_step_is_compensated_without_output(saga: Engine) -> None:
    handle = await saga.workflow(WORKFLOW).create(id="failed", params={"ship_fails": True})
    status = await handle.wait(10)
    assert status["error"] == {"name": "NonRetryableError", "message": "warehouse closed"}
    assert saga_flows.SEEN["failed"] == [
        ("ship", None, "NonRetryableError"),
        ("charge", {"id": "c1"}, "NonRetryableError"),
        ("reserve", {"id": "r1"}, "NonRetryableError"),
    ]
    assert await total_steps_announced(saga, "failed") == 3
