"""Bulk actions on a filter (extension): selection, dry run, the durable job, resumption."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest

from stepstone import Engine, NonRetryableError, WorkerSettings, WorkflowEntrypoint
from stepstone.bulk import BulkRunner, BulkService, make_spec
from stepstone.engine.clock import ManualClock
from stepstone.errors import InvalidRequest
from stepstone.model.actors import Actor
from stepstone.model.ops_records import AuditQuery, BulkItem, BulkProgress
from stepstone.ops import CreateRequest, Operations
from stepstone.storage.base import Storage, Transition

T0 = 1_790_000_000_000
ALICE = Actor("token", "alice", "tok-1")
RUNS: Counter[str] = Counter()
FAIL = {"charge": True}


class Charge(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def reserve() -> str:
            RUNS["reserve"] += 1
            return "reserved"

        async def charge() -> str:
            RUNS["charge"] += 1
            if FAIL["charge"]:
                raise NonRetryableError("card declined")
            return "charged"

        await step.do("reserve", reserve)
        return await step.do("charge", charge)


async def setup(storage: Storage, count: int) -> tuple[Operations, ManualClock]:
    clock = ManualClock(T0)
    ops = Operations(storage, clock=clock, check_importable=False)
    await ops.put_workflow("acct", "orders", class_name="Orders", script_name="orders")
    for n in range(count):
        await ops.create_instances(
            "acct",
            "orders",
            [CreateRequest(id=f"{'ab' if n % 2 else 'cd'}-{n:04d}")],
            skip_existing=False,
        )
        clock.advance(1000)
    return ops, clock


async def set_status(ops: Operations, instance_id: str, status: str, error: Any = None) -> None:
    _, record = await ops.instance("acct", "orders", instance_id)
    transition = Transition(status=status, ended=status in ("errored", "complete"))
    if error is not None:
        transition = Transition(status=status, ended=True, error=orjson.dumps(error))
    await ops.storage.transition_instance(record.pk, record.status, transition, ops.now())


async def test_dry_run_counts_and_shows_the_first_page_of_the_filter(storage: Storage) -> None:
    ops, _ = await setup(storage, 120)
    await set_status(ops, "ab-0001", "errored", {"name": "CardDeclined", "message": "no"})
    await set_status(ops, "ab-0003", "errored", {"name": "Timeout", "message": "slow"})
    await set_status(ops, "cd-0004", "paused")
    service = BulkService(ops)

    everything = await service.dry_run("acct", "orders", make_spec("terminate"))
    assert everything.matched == 120
    assert len(everything.first_page) == 50
    assert everything.first_page[0].id == "cd-0000"  # oldest first

    several = make_spec("terminate", statuses=["errored", "paused"])
    assert (await service.dry_run("acct", "orders", several)).matched == 3
    by_error = make_spec("retry_errored", error_name="CardDeclined")
    assert [i.id for i in (await service.dry_run("acct", "orders", by_error)).first_page] == [
        "ab-0001"
    ]
    prefix = make_spec("delete", id_prefix="ab-", created_after=T0 + 10_000)
    result = await service.dry_run("acct", "orders", prefix)
    assert result.matched == 55  # ab- are the odd ones, from the 11th on
    window = make_spec("pause", created_after=T0 + 5_000, created_before=T0 + 8_000)
    assert [i.id for i in (await service.dry_run("acct", "orders", window)).first_page] == [
        "ab-0005",
        "cd-0006",
        "ab-0007",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "explode"}, "action must be one of"),
        ({"action": "pause", "statuses": ["sleeping"]}, "unknown status 'sleeping'"),
        ({"action": "pause", "rollback": True}, "rollback applies to terminate only"),
        ({"action": "terminate", "from_step": "x"}, "from_step applies to restart only"),
        ({"action": "pause", "id_prefix": ""}, "id_prefix must be 1 to 100"),
    ],
)
def test_bad_specs_say_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        make_spec(**kwargs)


async def test_a_job_acts_on_every_match_and_summarises(storage: Storage) -> None:
    ops, _ = await setup(storage, 250)
    await set_status(ops, "cd-0010", "complete")
    service = BulkService(ops)
    job = await service.start("acct", "orders", make_spec("terminate"), ALICE)
    assert job.status == "queued" and job.matched == 250

    runner = BulkRunner(ops, page_size=40)
    assert await runner.tick() == 1
    final = await service.get("acct", job.id)
    assert (final.status, final.done, final.skipped, final.failed) == ("complete", 249, 1, 0)
    skipped = await storage.list_bulk_items(job.id, "skipped", None, 10)
    assert [(i.instance_id, i.reason) for i in skipped] == [("cd-0010", "complete: already ended")]
    _, record = await ops.instance("acct", "orders", "ab-0249")
    assert record.status == "terminated"

    # Each instance acted on is in the audit log, as Alice, tied to the job.
    entries = await storage.list_audit(AuditQuery("acct", instance_id="ab-0249"))
    assert [(e.action, e.actor_name, e.bulk_job_id, e.outcome) for e in entries] == [
        ("terminate", "alice", job.id, "ok")
    ]
    started = await storage.list_audit(AuditQuery("acct", actions=("bulk.start", "bulk.end")))
    assert [e.action for e in started] == ["bulk.end", "bulk.start"]
    assert orjson.loads(started[0].detail or b"")["done"] == 249


async def test_a_job_resumes_after_a_crash_without_redoing(storage: Storage) -> None:
    ops, clock = await setup(storage, 100)
    service = BulkService(ops)
    job = await service.start("acct", "orders", make_spec("pause"), ALICE)

    first = BulkRunner(ops, page_size=30, lease_ms=10_000, owner="server-a")
    claimed = await storage.claim_bulk_job("server-a", clock.now_ms(), 10_000)
    assert claimed is not None
    assert await first.run(claimed, max_pages=2) is False  # server-a dies after two pages
    midway = await service.get("acct", job.id)
    assert (midway.status, midway.done) == ("running", 60)

    second = BulkRunner(ops, page_size=30, owner="server-b")
    assert await second.tick() == 0  # server-a's lease still holds
    clock.advance(10_001)
    assert await second.tick() == 1
    final = await service.get("acct", job.id)
    assert (final.status, final.done, final.skipped) == ("complete", 100, 0)
    # server-a, back from the dead, finds its lease gone and writes nothing.
    assert await first.run(claimed, max_pages=1) is False
    assert (await service.get("acct", job.id)).done == 100
    paused = await storage.list_audit(AuditQuery("acct", actions=("pause",), limit=500))
    assert len(paused) == 100


async def test_a_redone_page_acts_on_no_instance_twice(storage: Storage) -> None:
    """The crash falls inside a page: one instance was acted on and recorded, one was being
    acted on (marked pending), the cursor had not moved. The page is read again: neither is
    acted on a second time, and the interrupted one says why it was skipped."""
    ops, clock = await setup(storage, 10)
    service = BulkService(ops)
    job = await service.start("acct", "orders", make_spec("restart"), ALICE)
    claimed = await storage.claim_bulk_job("a", clock.now_ms(), 1000)
    assert claimed is not None
    crashed = (BulkItem("cd-0000", "done"), BulkItem("ab-0001", "pending"))
    assert await storage.advance_bulk_job(
        job.id, "a", BulkProgress(crashed, None), clock.now_ms(), 1
    )
    clock.advance(2)
    await BulkRunner(ops, page_size=4).tick()
    final = await service.get("acct", job.id)
    assert (final.status, final.done, final.skipped) == ("complete", 9, 1)
    skipped = await storage.list_bulk_items(job.id, "skipped", None, 10)
    assert [i.instance_id for i in skipped] == ["ab-0001"]
    assert "interrupted" in (skipped[0].reason or "")
    assert await storage.list_bulk_items(job.id, "pending", None, 10) == []
    restarted = await storage.list_audit(AuditQuery("acct", actions=("restart",), limit=50))
    expected = {f"{'ab' if n % 2 else 'cd'}-{n:04d}" for n in range(2, 10)}
    assert {e.instance_id for e in restarted} == expected


async def test_cancel_stops_a_job_between_pages(storage: Storage) -> None:
    ops, clock = await setup(storage, 60)
    service = BulkService(ops)
    job = await service.start("acct", "orders", make_spec("delete"), ALICE)
    claimed = await storage.claim_bulk_job("a", clock.now_ms(), 60_000)
    assert claimed is not None
    runner = BulkRunner(ops, page_size=20, owner="a")
    await runner.run(claimed, max_pages=1)
    cancelled = await service.cancel("acct", job.id, ALICE)
    assert cancelled.status == "cancelled"
    assert await runner.run(claimed) is False
    assert (await service.get("acct", job.id)).done == 20
    workflow = await ops.workflow("acct", "orders")
    assert (await storage.count_instances(workflow.pk)).get("queued") == 40


async def test_retry_errored_restarts_from_the_failed_step(backend_url: str) -> None:
    RUNS.clear()
    FAIL["charge"] = True
    engine = await Engine.open(
        backend_url, worker_settings=WorkerSettings(concurrency=10, poll_ms=25, lease_ms=5_000)
    )
    try:
        await engine.register("charges", Charge)
        binding = engine.workflow("charges")
        handles = [await binding.create(id=f"c-{n}") for n in range(3)]
        for handle in handles:
            await wait_status(handle, "errored")
        assert RUNS == {"reserve": 3, "charge": 3}
        FAIL["charge"] = False
        service = BulkService(engine.ops)
        job = await service.start(
            "default", "charges", make_spec("retry-errored", statuses=["errored"]), ALICE
        )
        # The engine's worker runs the job itself (a periodic job): nothing calls tick here.
        async with asyncio.timeout(20):
            while (await service.get("default", job.id)).status != "complete":
                await asyncio.sleep(0.05)
        for handle in handles:
            assert (await wait_status(handle, "complete"))["output"] == "charged"
        # Reserve kept its recorded result: only the failed step ran again.
        assert RUNS == {"reserve": 3, "charge": 6}
    finally:
        await engine.close()


async def wait_status(handle: Any, status: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            current = await handle.status()
            if current["status"] == status:
                return dict(current)
            await asyncio.sleep(0.02)
