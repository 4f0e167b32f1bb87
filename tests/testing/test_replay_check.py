"""The replay check at the engine's level: histories made by the harness, checked in-process
against versions of the code (``check_instance``), over the memory store they were made on."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from stepstone.engine.recorded import RecordedInstance, decode_export, encode_export, select
from stepstone.engine.replay_check import check_instance
from stepstone.testing import WorkflowHarness
from tests.testing import flows


@pytest.fixture
async def harness() -> AsyncIterator[WorkflowHarness]:
    flows.CALLS.clear()
    async with await WorkflowHarness.open() as h:
        for name, cls in (("trip", flows.Trip), ("approval", flows.Approval)):
            await h.register(name, cls)
        yield h


async def recorded(harness: WorkflowHarness, instance_id: str) -> RecordedInstance:
    items = [i async for i in select(harness.engine.storage, None, instance=instance_id)]
    assert len(items) == 1
    return items[0]


@pytest.mark.parametrize(
    ("payload", "output"),
    [
        ({}, {"booked": ["H1", "F1"]}),
        ({"fail_flight": True}, {"booked": False, "undo": "done"}),
        (
            {"fail_flight": True, "fail_undo": True},
            {"booked": False, "undo": "hotel will not cancel"},
        ),
    ],
)
async def test_a_saga_replays_its_recorded_undo_results(
    harness: WorkflowHarness, payload: dict[str, bool], output: dict[str, object]
) -> None:
    trip = await harness.create("trip", payload, id="t")
    assert await trip.output() == output
    calls = list(flows.CALLS)
    verdict = await check_instance(await recorded(harness, "t"), flows.Trip)
    assert verdict.agrees, verdict
    assert calls == flows.CALLS  # no undo ran again


async def test_a_step_between_retries_is_where_the_check_stops(harness: WorkflowHarness) -> None:
    await harness.register("reminder", flows.Reminder)
    reminder = await harness.create("reminder", {"failures": 1}, id="r")
    await harness.advance("3 days")
    assert (await reminder.status())["status"] == "waiting"  # between attempt 1 and 2
    calls = list(flows.CALLS)
    verdict = await check_instance(await recorded(harness, "r"), flows.Reminder)
    assert verdict.agrees
    assert verdict.next_steps == ['step.do "send reminder-1"']
    assert verdict.replayed == 1  # the sleep
    assert calls == flows.CALLS


async def test_an_instance_not_yet_started_agrees(harness: WorkflowHarness) -> None:
    await harness.create("approval", id="later")
    item = await recorded(harness, "later")
    queued = dataclasses.replace(item, status="queued", events=item.events[:1])
    assert [e.type for e in queued.events] == ["workflow_queued"]
    verdict = await check_instance(queued, flows.Approval)
    assert verdict.agrees and verdict.next_steps == ['step.do "reserve-1"']


async def test_a_run_that_awaits_outside_steps_is_reported(
    harness: WorkflowHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stepstone.engine import replay_check

    monkeypatch.setattr(replay_check, "CHECK_TIMEOUT_S", 0.2)

    class Hangs(flows.Approval):
        async def run(self, event: object, step: object) -> object:
            import asyncio

            await asyncio.Event().wait()
            return None

    await harness.create("approval", id="a")
    verdict = await check_instance(await recorded(harness, "a"), Hangs)
    assert not verdict.agrees
    assert verdict.divergence is not None and "did not reach a step" in verdict.divergence


async def test_the_export_round_trip_keeps_what_the_check_reads(harness: WorkflowHarness) -> None:
    order = await harness.create("approval", {"sku": "Q"}, id="q")
    await order.send_event("approval", {"approved": True})
    item = await recorded(harness, "q")
    (decoded,) = decode_export(encode_export([item]))
    assert decoded.events == item.events
    assert (decoded.status, decoded.output, decoded.params) == (
        item.status,
        item.output,
        item.params,
    )
    assert (await check_instance(decoded, flows.Approval)).agrees
    assert not (await check_instance(decoded, flows.ApprovalNewOutput)).agrees
