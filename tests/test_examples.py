"""The examples `make run` serves run end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stepstone import Engine, WorkerSettings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "stepstone.toml"


@pytest.fixture
async def engine(backend_url: str) -> AsyncIterator[Engine]:
    eng = await Engine.open(
        backend_url, config=EXAMPLES, worker_settings=WorkerSettings(poll_ms=20)
    )
    try:
        yield eng
    finally:
        await eng.close()


ORDER = {"items": [{"sku": "A1", "qty": 2, "price": 10.0}, {"sku": "B2", "qty": 1, "price": 5.5}]}


async def test_an_approved_order_is_charged_and_shipped(engine: Engine) -> None:
    order = await engine.workflow("order-workflow").create(id="o1", params=ORDER)
    await order.send_event(type="approval", payload={"approved": True})
    status = await order.wait(10)
    assert status["output"] == {"charged": 25.5, "tracking": "trk_o1"}


async def test_a_rejected_order_is_refunded(engine: Engine) -> None:
    order = await engine.workflow("order-workflow").create(id="o2", params=ORDER)
    await order.send_event(type="approval", payload={"approved": False})
    status = await order.wait(10)
    assert status["status"] == "errored"
    assert status["error"] == {"name": "NonRetryableError", "message": "the order was rejected"}
    assert status["rollback"] == {"outcome": "complete", "error": None}


async def test_bad_orders_fail_without_retries(engine: Engine) -> None:
    order = await engine.workflow("order-workflow").create(id="o3", params={"items": []})
    status = await order.wait(10)
    assert status["error"]["name"] == "NonRetryableError"
    assert status["rollback"] is None


async def test_pipeline_fans_out_and_streams_its_csv(engine: Engine) -> None:
    run = await engine.workflow("data-pipeline").create(
        id="p1", params={"sources": ["alpha", "beta", "gamma"]}
    )
    status = await run.wait(10)
    assert status["output"] == {"sources": 3, "rows": 9, "csv_bytes": 106}
    _, record = await engine.ops.instance("default", "data-pipeline", "p1")
    history = await engine.ops.history(record)
    csv = history.steps[("do", "render csv-1")]
    assert csv.stream is not None
    stored = b"".join(
        [
            c
            async for c in engine.storage.read_stream(
                record.pk, "render csv-1", csv.stream["chunks"]
            )
        ]
    )
    lines = stored.decode().splitlines()
    assert lines[0] == "source,row,value"
    assert lines[1:4] == ["alpha,0,0", "alpha,1,5", "alpha,2,10"]
    assert len(lines) == 10
    bad = await engine.workflow("data-pipeline").create(id="p2", params={"sources": []})
    assert (await bad.wait(10))["error"]["message"] == "payload.sources must be a non-empty list"


async def test_nightly_report_hides_its_credentials(engine: Engine) -> None:
    run = await engine.workflow("nightly-report").create(id="n1")
    status = await run.wait(10)
    assert status["output"]["recipient"] == "ops@example.com"
    assert status["output"]["authenticated"] is True
    _, record = await engine.ops.instance("default", "nightly-report", "n1")
    history = await engine.ops.history(record)
    assert history.steps[("do", "load credentials-1")].sensitive
    workflow = await engine.ops.workflow("default", "nightly-report")
    assert workflow.version.schedules == ("0 2 * * *",)
