"""The examples' workflows, tested as their authors would test them: with the harness, its
fake clock, and mocks of the steps that would call the outside world."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stepstone import NonRetryableError
from stepstone.testing import WorkflowHarness

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DAY_MS = 86_400_000
ORDER = {"items": [{"sku": "A1", "qty": 2, "price": 10.0}, {"sku": "B2", "qty": 1, "price": 5.5}]}


@pytest.fixture
async def examples() -> AsyncIterator[WorkflowHarness]:
    async with await WorkflowHarness.open(EXAMPLES / "stepstone.toml") as harness:
        yield harness


@pytest.fixture
async def cloudflare() -> AsyncIterator[WorkflowHarness]:
    async with await WorkflowHarness.open(EXAMPLES / "cloudflare") as harness:
        yield harness


async def test_an_order_retries_its_charge_then_ships_once_approved(
    examples: WorkflowHarness,
) -> None:
    order = await examples.create("order-workflow", {**ORDER, "fail_payment_attempts": 2})
    charge = await order.step("charge payment")
    assert [a.success for a in charge.attempts] == [False]
    await examples.advance("1 second")  # the first retry delay
    await examples.advance("2 seconds")  # exponential: the second is twice as long
    charge = await order.step("charge payment")
    assert [a.success for a in charge.attempts] == [False, False, True]
    assert charge.output == {"charge_id": f"ch_{order.id}", "amount": 25.5}
    await order.send_event("approval", {"approved": True})
    assert await order.output() == {"charged": 25.5, "tracking": f"trk_{order.id}"}


async def test_an_order_nobody_approves_is_refunded_after_an_hour(
    examples: WorkflowHarness,
) -> None:
    order = await examples.create("order-workflow", ORDER)
    await examples.advance("59 minutes")
    assert (await order.status())["status"] == "waiting"
    await examples.advance("1 minute")
    status = await order.status()
    assert status["error"] == {
        "name": "NonRetryableError",
        "message": "nobody approved the order within an hour",
    }
    assert status["rollback"] == {"outcome": "complete", "error": None}
    refund = await order.step("charge payment", kind="rollback")
    assert refund.output["refunded"] == {"charge_id": f"ch_{order.id}", "amount": 25.5}


async def test_a_payment_provider_that_keeps_failing_fails_the_order(
    examples: WorkflowHarness,
) -> None:
    examples.fail_step("charge payment", ConnectionError("provider down"), times=10)
    order = await examples.create("order-workflow", ORDER)
    status = await order.run_to_end()
    assert status["status"] == "errored"
    assert status["error"] == {"name": "ConnectionError", "message": "provider down"}
    assert len((await order.step("charge payment")).attempts) == 4  # 1 + 3 retries


async def test_a_mocked_charge_is_what_the_order_returns(examples: WorkflowHarness) -> None:
    examples.mock_step("charge payment", {"charge_id": "ch_test", "amount": 1.0})
    order = await examples.create("order-workflow", ORDER)
    await order.send_event("approval", {"approved": True})
    assert (await order.output())["charged"] == 1.0


async def test_the_pipeline_fetches_in_parallel_and_streams_its_csv(
    examples: WorkflowHarness,
) -> None:
    run = await examples.create("data-pipeline", {"sources": ["alpha", "beta"]})
    assert await run.output() == {"sources": 2, "rows": 6, "csv_bytes": 75}
    names = [s.name for s in await run.steps()]
    assert names[0] == "check input-1" and names[-1] == "render csv-1"
    assert set(names[1:3]) == {"fetch alpha-1", "fetch beta-1"}


async def test_the_pipeline_refuses_bad_input_without_retrying(
    examples: WorkflowHarness,
) -> None:
    run = await examples.create("data-pipeline", {"sources": []})
    status = await run.status()
    assert status["error"]["name"] == "NonRetryableError"
    assert len((await run.step("check input")).attempts) == 1


async def test_the_nightly_report_sleeps_then_reports(examples: WorkflowHarness) -> None:
    report = await examples.create("nightly-report")
    assert (await report.status())["status"] == "waiting"
    await examples.advance("1 second")
    assert await report.output() == {
        "for": None,
        "recipient": "ops@example.com",
        "authenticated": True,
    }


async def test_the_cloudflare_project_runs_unchanged(cloudflare: WorkflowHarness) -> None:
    order = await cloudflare.create("order-workflow", ORDER)
    await order.send_event("approved", {"by": "ana"})
    assert (await order.status())["status"] == "waiting"  # the cool-off sleep
    await cloudflare.advance("1 second")
    assert await order.output() == {
        "total": 25.5,
        "message": "Thanks for your order: 2 items, 25.5 total",
        "by": "ana",
    }


async def test_the_cloudflare_order_fails_when_validation_is_made_to_fail(
    cloudflare: WorkflowHarness,
) -> None:
    cloudflare.fail_step("validate order", NonRetryableError("no stock"))
    order = await cloudflare.create("order-workflow", ORDER)
    status = await order.status()
    assert status["error"] == {"name": "NonRetryableError", "message": "no stock"}


async def test_the_nightly_schedule_fires_each_night_on_the_fake_clock(
    examples: WorkflowHarness,
) -> None:
    start = examples.now()  # 2026-01-01T00:00Z
    await examples.advance("3 days")
    nights = [start + 2 * 3_600_000 + day * DAY_MS for day in range(3)]
    for night in nights:
        report = await examples.get("nightly-report", f"0 2 * * *-{night}")
        assert await report.output() == {
            "for": night,
            "recipient": "ops@example.com",
            "authenticated": True,
        }
