"""The cap on instances running across all workers holds, however many ask at once."""

from __future__ import annotations

import asyncio

from stepstone.storage.base import Release
from tests.storage.conftest import LEASE, NOW, Fixture


async def test_claims_stop_at_the_cap_shared_by_all_workers(fx: Fixture) -> None:
    await fx.create(*(f"i{n}" for n in range(6)))
    pks = [fx.workflow.pk]
    first = await fx.storage.claim_runnable("w1", 10, NOW, LEASE, pks, max_running=3)
    assert len(first) == 3
    assert await fx.storage.claim_runnable("w2", 10, NOW, LEASE, pks, max_running=3) == []
    await fx.storage.release_instance(first[0], Release("waiting", runnable_at=NOW + 10**6), NOW)
    second = await fx.storage.claim_runnable("w2", 10, NOW, LEASE, pks, max_running=3)
    assert len(second) == 1
    # An expired lease no longer counts as running.
    later = NOW + LEASE + 1
    taken = await fx.storage.claim_runnable("w3", 10, later, LEASE, pks, max_running=3)
    assert len(taken) == 3


async def test_concurrent_claims_do_not_overshoot(fx: Fixture) -> None:
    await fx.create(*(f"i{n}" for n in range(20)))
    pks = [fx.workflow.pk]
    results = await asyncio.gather(
        *(fx.storage.claim_runnable(f"w{n}", 3, NOW, LEASE, pks, max_running=4) for n in range(6))
    )
    assert sum(len(r) for r in results) == 4
