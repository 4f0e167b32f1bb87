"""Histories recorded by an earlier Stepstone replay with today's engine.

An instance that was waiting when the engine was upgraded must resume from its record: no
recorded step runs again, recorded outputs are returned as they were, and the rest completes.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import orjson
import pytest

from stepstone import Engine, WorkerSettings
from stepstone.storage.base import NewEvent, Release

HISTORIES = Path(__file__).resolve().parent / "histories"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "stepstone.toml"


async def test_an_order_recorded_while_waiting_resumes_from_its_record(backend_url: str) -> None:
    if backend_url == "memory://":
        pytest.skip("the upgrade needs a store that outlives the first engine")
    document = json.loads((HISTORIES / "order-waiting-for-approval.json").read_text())
    async with await Engine.open(backend_url, config=EXAMPLES, run_worker=False) as setup:
        await setup.workflow(document["workflow"]).create(id="upgraded", params=document["params"])
        claim = (await setup.storage.claim_runnable("import", 1, setup.ops.now(), 60_000, None))[0]
        now = setup.ops.now()
        recorded = [
            NewEvent(
                e["type"],
                now,
                None if e["data"] is None else base64.b64decode(e["data"]),
                e["step_kind"],
                e["step_name"],
            )
            for e in document["events"]
            if e["type"] != "workflow_queued"  # the create above wrote its own
        ]
        await setup.storage.record_progress(claim, recorded)
        await setup.storage.release_instance(claim, Release("waiting"), now)

    async with await Engine.open(
        backend_url, config=EXAMPLES, worker_settings=WorkerSettings(poll_ms=20)
    ) as engine:
        order = await engine.workflow(document["workflow"]).get("upgraded")
        await order.send_event(type="approval", payload={"approved": True})
        status = await order.wait(10)
        _, record = await engine.ops.instance("default", document["workflow"], "upgraded")
        events = await engine.storage.load_events(record.pk)

    # The charge id comes from the record ("recorded" was the id it ran under), not a rerun.
    assert status["output"] == {"charged": 20.0, "tracking": "trk_upgraded"}
    starts = Counter(e.step_name for e in events if e.type == "attempt_started")
    assert starts["validate order-1"] == 1
    assert starts["charge payment-1"] == 2  # both recorded attempts, no new one
    assert starts["ship-1"] == 1
    charge = next(
        e for e in events if e.type == "step_completed" and e.step_name == "charge payment-1"
    )
    assert orjson.loads(charge.data or b"{}")["output"]["charge_id"] == "ch_recorded"
