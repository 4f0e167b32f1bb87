"""Repair and resume (extension): a failed or completed step gets a new recorded output."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from stepstone import Engine, NonRetryableError, WorkerSettings, WorkflowEntrypoint
from stepstone.errors import InvalidAction, InvalidRequest, StepNotFound
from stepstone.model.actors import Actor
from stepstone.repair import RepairRequest, parse_output, repair
from tests.engine.conftest import wait_for

CALLS: Counter[str] = Counter()
ONCALL = Actor("token", "oncall", "t1")
GATE: dict[str, asyncio.Event] = {}


class Checkout(WorkflowEntrypoint):
    """``charge`` always fails; ``ship`` uses its output."""

    async def run(self, event: Any, step: Any) -> Any:
        async def reserve() -> str:
            CALLS["reserve"] += 1
            return "r1"

        async def charge() -> dict[str, Any]:
            CALLS["charge"] += 1
            raise NonRetryableError("card declined")

        reserved = await step.do("reserve", reserve)
        receipt = await step.do("charge", charge)

        async def ship() -> str:
            CALLS["ship"] += 1
            return f"shipped with {receipt['receipt']}"

        shipped = await step.do("ship", ship)
        return {"reserved": reserved, "shipped": shipped}


class Held(WorkflowEntrypoint):
    """Completes ``first`` and then waits on a gate inside ``second``."""

    async def run(self, event: Any, step: Any) -> Any:
        async def first() -> int:
            CALLS["first"] += 1
            return 1

        async def second() -> str:
            CALLS["second"] += 1
            await GATE.setdefault("held", asyncio.Event()).wait()
            return "done"

        async def third() -> int:
            return int(one) + 1

        one = await step.do("first", first)
        two = await step.do("second", second)
        # A pause takes effect at a step boundary: this one is where "held" pauses.
        three = await step.do("third", third)
        return {"one": one, "two": two, "three": three}


@pytest.fixture
async def engine(backend_url: str) -> AsyncIterator[Engine]:
    CALLS.clear()
    GATE.clear()
    eng = await Engine.open(
        backend_url, worker_settings=WorkerSettings(concurrency=5, poll_ms=25, lease_ms=5_000)
    )
    await eng.register("checkout", Checkout)
    await eng.register("held", Held)
    try:
        yield eng
    finally:
        GATE.setdefault("held", asyncio.Event()).set()
        await eng.close()


async def _errored(engine: Engine, instance_id: str) -> Any:
    handle = await engine.workflow("checkout").create(id=instance_id)
    await wait_for(handle, "errored")
    return handle


async def test_repair_a_failed_step_and_resume_runs_on_from_the_record(engine: Engine) -> None:
    handle = await _errored(engine, "o1")
    result = await repair(
        engine.ops,
        "default",
        "checkout",
        "o1",
        RepairRequest("charge-1", b'{"receipt": "manual-42"}', resume=True, actor=ONCALL),
    )
    assert result.status == "queued"
    assert result.previous["success"] is False
    assert result.previous["error"]["message"] == "card declined"
    done = await handle.wait(10)
    assert done["status"] == "complete"
    assert done["output"] == {"reserved": "r1", "shipped": "shipped with manual-42"}
    # Neither the repaired step nor the one before it ran again.
    assert dict(CALLS) == {"reserve": 1, "charge": 1, "ship": 1}


async def test_the_history_shows_the_repair_as_its_own_entry(engine: Engine) -> None:
    await _errored(engine, "o2")
    await repair(
        engine.ops, "default", "checkout", "o2", RepairRequest("charge", b"{}", actor=ONCALL)
    )
    _, record = await engine.ops.instance("default", "checkout", "o2")
    assert record.status == "errored"  # without resume nothing else changes
    events = await engine.ops.storage.load_events(record.pk)
    entry = [e for e in events if e.type == "step_repaired"]
    assert len(entry) == 1
    data = orjson.loads(entry[0].data or b"")
    assert data["step"] == "charge-1" and data["by"] == "token oncall (t1)"
    assert data["previous"]["error"]["message"] == "card declined"
    step = (await engine.ops.history(record)).steps[("do", "charge-1")]
    assert step.success is True and orjson.loads(step.output or b"") == {}


async def test_resume_drops_what_followed_the_failure(engine: Engine) -> None:
    handle = await _errored(engine, "o3")
    await repair(
        engine.ops,
        "default",
        "checkout",
        "o3",
        RepairRequest("charge-1", b'{"receipt": "x"}', resume=True),
    )
    await handle.wait(10)
    _, record = await engine.ops.instance("default", "checkout", "o3")
    types = [e.type for e in await engine.ops.storage.load_events(record.pk)]
    assert "workflow_errored" not in types
    assert types.count("workflow_completed") == 1
    assert "step_repaired" in types


async def test_repair_a_completed_step_of_a_paused_instance(engine: Engine) -> None:
    handle = await engine.workflow("held").create(id="p1")
    await wait_for(handle, "running")
    async with asyncio.timeout(10):
        while CALLS["second"] == 0:
            await asyncio.sleep(0.01)
    await handle.pause()
    # Pausing waits for the running step: until it ends the instance is not repairable.
    with pytest.raises(InvalidAction, match="while it is waitingForPause"):
        await repair(engine.ops, "default", "held", "p1", RepairRequest("second", b'"x"'))
    GATE["held"].set()
    await wait_for(handle, "paused")
    await repair(engine.ops, "default", "held", "p1", RepairRequest("first", b"41", resume=True))
    done = await handle.wait(10)
    assert done["output"] == {"one": 41, "two": "done", "three": 42}
    assert CALLS["first"] == 1


async def test_refused_for_a_running_instance(engine: Engine) -> None:
    handle = await engine.workflow("held").create(id="r1")
    await wait_for(handle, "running")
    async with asyncio.timeout(10):
        while CALLS["first"] == 0:
            await asyncio.sleep(0.01)
    with pytest.raises(InvalidAction, match="while it is running"):
        await repair(engine.ops, "default", "held", "r1", RepairRequest("first", b"2"))


async def test_unknown_step_and_bad_json_say_what_is_wrong(engine: Engine) -> None:
    await _errored(engine, "o4")
    with pytest.raises(StepNotFound, match=r"steps: reserve-1, charge-1"):
        await repair(engine.ops, "default", "checkout", "o4", RepairRequest("nope", b"1"))
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_output("{nope")


async def test_repairs_are_audited_whatever_the_outcome(engine: Engine) -> None:
    from stepstone.model.ops_records import AuditQuery

    await _errored(engine, "o5")
    await repair(
        engine.ops, "default", "checkout", "o5", RepairRequest("charge", b"1", actor=ONCALL)
    )
    with pytest.raises(StepNotFound):
        await repair(
            engine.ops, "default", "checkout", "o5", RepairRequest("zz", b"1", actor=ONCALL)
        )
    entries = await engine.storage.list_audit(AuditQuery(account_id="default"))
    mine = [(e.action, e.outcome, e.actor_name) for e in entries if e.instance_id == "o5"]
    assert mine == [("repair", "error", "oncall"), ("repair", "ok", "oncall")]


class TwoApprovals(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def prepare() -> str:
            CALLS["prepare"] += 1
            return "ready"

        await step.do("prepare", prepare)
        first = await step.wait_for_event("first", "approval", timeout="1 hour")
        second = await step.wait_for_event("second", "approval", timeout="1 hour")
        return [first["payload"], second["payload"]]


@pytest.mark.parametrize("choice", ["replay", "drop"])
async def test_restart_from_a_step_replays_or_drops_the_events_after_it(
    engine: Engine, choice: str
) -> None:
    from stepstone.ops import RestartFrom

    await engine.register("approvals", TwoApprovals)
    handle = await engine.workflow("approvals").create(id=f"a-{choice}")
    await wait_for(handle, "waiting")
    await handle.send_event(type="approval", payload="alice")
    await handle.send_event(type="approval", payload="bob")
    assert (await handle.wait(10))["output"] == ["alice", "bob"]
    await engine.ops.restart(
        "default", "approvals", f"a-{choice}", from_=RestartFrom("first", 1, "waitForEvent", choice)
    )
    if choice == "replay":
        assert (await handle.wait(10))["output"] == ["alice", "bob"]
    else:
        await wait_for(handle, "waiting")
        await handle.send_event(type="approval", payload="carol")
        await handle.send_event(type="approval", payload="dan")
        assert (await handle.wait(10))["output"] == ["carol", "dan"]
    assert CALLS["prepare"] == 1


async def test_restart_events_must_be_drop_or_replay(engine: Engine) -> None:
    from stepstone.ops import RestartFrom

    await _errored(engine, "o9")
    with pytest.raises(InvalidRequest, match="drop or replay"):
        await engine.ops.restart(
            "default", "checkout", "o9", from_=RestartFrom("charge", events="keep")
        )
