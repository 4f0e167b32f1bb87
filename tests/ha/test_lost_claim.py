"""A claim under way when the primary dies is held by one worker at most (issue 19).

The standby is cut off first, so the claim cannot reach it; the primary is then killed and the
standby promoted, and a second worker claims on the new primary. Before migration 0013 the
first claim committed without waiting for the standby and was acknowledged, the promoted
standby handed the same instance out again at the same epoch, and both holders wrote. Now the
claim waits for the standby, its answer is lost with the primary, and whichever worker holds
the instance on the new primary is the only one whose writes land.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from stepstone.storage.base import Claim, Fenced, NewEvent, NewInstance, WorkflowDefinition
from stepstone.storage.postgres import PostgresStorage
from tests.ha.pair import Pair, needs_clusters

pytestmark = [pytest.mark.slow, needs_clusters]

LEASE_MS = 120_000


async def _until(what: str, done: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(done):
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        await asyncio.sleep(0.05)


async def test_a_claim_in_flight_when_the_primary_dies_has_one_holder(pair: Pair) -> None:
    now = int(time.time() * 1000)
    first = PostgresStorage(pair.url)
    second = PostgresStorage(pair.url)
    claiming: asyncio.Task[list[Claim]] | None = None
    await first.open()
    try:
        wf = await first.register_workflow("a", "wf", WorkflowDefinition("C", "m"), now)
        await first.create_instances(
            wf.pk, wf.version.id, [NewInstance("i1", b"1")], now, skip_existing=False
        )
        assert pair.link is not None
        pair.link.cut()
        claiming = asyncio.create_task(first.claim_runnable("worker-a", 10, now, LEASE_MS, None))
        # Either acknowledged at once (a claim that does not wait for the standby) or the
        # claim statement itself waiting for the standby.
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
            " AND query LIKE '%lease_owner = $1%'"
        )
        await _until(
            "the claim acknowledged or waiting for the standby",
            lambda: claiming.done() or pair.primary.sql(waiting) != "0",
        )
        pair.primary.kill()
        pair.promote()
        await second.open()
        taken = await second.claim_runnable("worker-b", 10, now, LEASE_MS, None)
        async with asyncio.timeout(120):
            held: list[tuple[PostgresStorage, Claim]] = [(first, c) for c in await claiming]
        held += [(second, c) for c in taken]
        assert held, "nobody holds the instance"

        written = 0
        for n, (store, claim) in enumerate(held):
            step = [NewEvent("step_completed", now, b"{}", "do", f"s-{n}")]
            try:
                await store.record_progress(claim, step)
            except Fenced:
                continue
            written += 1
        assert written == 1, f"{written} holders wrote: {[(c.owner, c.epoch) for _, c in held]}"
        pk = held[0][1].instance.pk
        events = await second.load_events(pk)
        assert [e.type for e in events].count("step_completed") == 1
    finally:
        if claiming is not None and not claiming.done():
            claiming.cancel()
        await second.close()
        await first.close()
