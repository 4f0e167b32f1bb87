"""Record the histories that ``test_recorded_histories.py`` replays.

Run by hand when a history is added: ``python -m tests.engine.histories.record``. Each history
is the event log of an example instance stopped while it waits, written as JSON next to this
file. The committed files are what older Stepstone versions wrote; replaying them with the
current code proves a change to the engine did not break instances already under way.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

from stepstone import Engine, WorkerSettings

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[2] / "examples" / "stepstone.toml"
ORDER = {"items": [{"sku": "A1", "qty": 2, "price": 10.0}], "fail_payment_attempts": 1}


def encode(events: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "type": e.type,
            "step_kind": e.step_kind,
            "step_name": e.step_name,
            "data": None if e.data is None else base64.b64encode(e.data).decode(),
        }
        for e in events
    ]


async def record() -> None:
    async with await Engine.open(
        "memory://", config=EXAMPLES, worker_settings=WorkerSettings(poll_ms=20)
    ) as engine:
        order = await engine.workflow("order-workflow").create(id="recorded", params=ORDER)
        async with asyncio.timeout(30):
            while (await order.status())["status"] != "waiting" or not await _waiting_for_event(
                engine
            ):
                await asyncio.sleep(0.05)
        _, record = await engine.ops.instance("default", "order-workflow", "recorded")
        events = await engine.storage.load_events(record.pk)
        document = {"workflow": "order-workflow", "params": ORDER, "events": encode(events)}
        (HERE / "order-waiting-for-approval.json").write_text(json.dumps(document, indent=1))


async def _waiting_for_event(engine: Engine) -> bool:
    _, record = await engine.ops.instance("default", "order-workflow", "recorded")
    history = await engine.ops.history(record)
    return ("waitForEvent", "await approval-1") in history.steps


if __name__ == "__main__":
    asyncio.run(record())
