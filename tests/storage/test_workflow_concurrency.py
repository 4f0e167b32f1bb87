"""A workflow's concurrency limit caps its live leases across every claimer, on every backend.

Instances over the cap stay queued and are claimed oldest first as slots open; a waiting,
sleeping or paused instance holds no slot (Cloudflare: only ``running`` instances count).
"""

from __future__ import annotations

import asyncio

from stepstone.storage.base import (
    NewInstance,
    Release,
    Storage,
    WorkflowDefinition,
    WorkflowRecord,
)
from tests.storage.conftest import LEASE, NOW, Fixture

SOON = NOW + 10**6


async def _cap(fx: Fixture, limit: int | None) -> WorkflowRecord:
    definition = WorkflowDefinition("OrderWorkflow", "shop.orders", concurrency_limit=limit)
    fx.workflow = await fx.storage.register_workflow("acct", "orders", definition, NOW)
    return fx.workflow


async def _claim_all(fx: Fixture, owner: str, now: int = NOW, limit: int = 10) -> list[str]:
    # A PostgreSQL store learns of a new cap from the claim that meets it, and claims the
    # capped workflow from the next one on: two claims, so every backend is asked the same.
    taken: list[str] = []
    for _ in range(2):
        claims = await fx.claim(owner, limit=limit - len(taken), now=now)
        taken += [c.instance.id for c in claims]
    return taken


async def _create_in_order(fx: Fixture, count: int) -> None:
    for n in range(count):
        await fx.create(f"i{n}", now=NOW - 1000 + n)


async def test_the_limit_is_stored_on_the_version_and_the_workflow(fx: Fixture) -> None:
    record = await _cap(fx, 3)
    assert record.version.concurrency_limit == 3
    found = await fx.storage.get_workflow("acct", "orders")
    assert found is not None and found.version.concurrency_limit == 3
    versions, _ = await fx.storage.list_versions(record.pk, 0, 10)
    assert [v.concurrency_limit for v in versions] == [3, None]


async def test_claims_stop_at_the_limit_and_take_the_oldest_first(fx: Fixture) -> None:
    await _cap(fx, 2)
    await _create_in_order(fx, 6)
    assert sorted(await _claim_all(fx, "w1")) == ["i0", "i1"]
    assert await _claim_all(fx, "w2") == []
    queued = [(await fx.get(f"i{n}")).status for n in range(2, 6)]
    assert queued == ["queued"] * 4


async def test_a_waiting_or_finished_instance_frees_its_slot(fx: Fixture) -> None:
    await _cap(fx, 2)
    await _create_in_order(fx, 5)
    claims = {c.instance.id: c for c in await fx.claim("w1", now=NOW)}
    claims.update({c.instance.id: c for c in await fx.claim("w1", now=NOW)})
    assert sorted(claims) == ["i0", "i1"]
    # A sleep hands the slot to the oldest queued instance.
    await fx.storage.release_instance(claims["i0"], Release("waiting", runnable_at=SOON), NOW)
    assert await _claim_all(fx, "w2") == ["i2"]
    await fx.storage.release_instance(claims["i1"], Release("complete", output=b"1"), NOW)
    assert await _claim_all(fx, "w2") == ["i3"]
    assert await _claim_all(fx, "w3") == []


async def test_a_woken_instance_comes_before_older_queued_ones(fx: Fixture) -> None:
    await _cap(fx, 1)
    await _create_in_order(fx, 3)
    (first,) = [c for _ in range(2) for c in await fx.claim("w1")]
    await fx.storage.release_instance(first, Release("waiting", runnable_at=NOW), NOW)
    assert await _claim_all(fx, "w1", now=NOW + 1) == ["i0"]


async def test_an_uncapped_workflow_is_not_held_back_by_a_full_one(fx: Fixture) -> None:
    await _cap(fx, 1)
    await _create_in_order(fx, 5)
    other = await fx.storage.register_workflow(
        "acct", "emails", WorkflowDefinition("EmailWorkflow", "shop.emails"), NOW
    )
    await fx.storage.create_instances(
        other.pk,
        other.version.id,
        [NewInstance(f"e{n}", b"{}") for n in range(3)],
        NOW,
        skip_existing=False,
    )
    pks = [fx.workflow.pk, other.pk]
    taken: list[str] = []
    for _ in range(2):
        claims = await fx.storage.claim_runnable("w1", 10 - len(taken), NOW, LEASE, pks)
        taken += [c.instance.id for c in claims]
    assert sorted(taken) == ["e0", "e1", "e2", "i0"]


async def test_concurrent_claimers_never_pass_the_limit(fx: Fixture) -> None:
    await _cap(fx, 3)
    await _create_in_order(fx, 20)
    pks = [fx.workflow.pk]
    total = 0
    for _ in range(2):
        rounds = await asyncio.gather(
            *(fx.storage.claim_runnable(f"w{n}", 3, NOW, LEASE, pks) for n in range(6))
        )
        total += sum(len(r) for r in rounds)
    assert total == 3


async def test_changing_the_limit_applies_to_the_next_claims(fx: Fixture) -> None:
    await _cap(fx, 1)
    await _create_in_order(fx, 6)
    assert len(await _claim_all(fx, "w1")) == 1
    await _cap(fx, 3)
    assert len(await _claim_all(fx, "w1")) == 2
    await _cap(fx, None)
    assert len(await _claim_all(fx, "w1")) == 3


async def test_an_expired_lease_no_longer_holds_a_slot(fx: Fixture) -> None:
    await _cap(fx, 2)
    await _create_in_order(fx, 4)
    assert len(await _claim_all(fx, "crashed")) == 2
    later = NOW + LEASE + 1
    # The two expired leases are taken over (oldest first), still two at a time.
    assert sorted(await _claim_all(fx, "w2", now=later)) == ["i0", "i1"]
    assert await _claim_all(fx, "w3", now=later) == []


async def test_the_global_cap_still_applies_on_top(fx: Fixture) -> None:
    await _cap(fx, 5)
    await _create_in_order(fx, 8)
    pks = [fx.workflow.pk]
    taken = 0
    for _ in range(2):
        claims = await fx.storage.claim_runnable("w1", 10, NOW, LEASE, pks, max_running=2)
        taken += len(claims)
    assert taken == 2


async def test_a_full_workflow_sets_no_wake_up(fx: Fixture) -> None:
    await _cap(fx, 1)
    await _create_in_order(fx, 3)
    pks = [fx.workflow.pk]
    assert await fx.storage.next_wake_at(pks) == NOW - 1000
    (held,) = [c for _ in range(2) for c in await fx.claim("w1")]
    # Queued instances are due, but only a release can give them a slot: nothing to poll for.
    assert await fx.storage.next_wake_at(pks) is None
    await fx.storage.release_instance(held, Release("complete", output=b"1"), NOW)
    assert await fx.storage.next_wake_at(pks) == NOW - 999


async def test_a_claims_look_ahead_leaves_out_a_workflow_it_filled(fx: Fixture) -> None:
    await _cap(fx, 1)
    await _create_in_order(fx, 3)
    pks = [fx.workflow.pk]
    await fx.claim("w0", limit=1)  # a PostgreSQL store learns of the cap here
    await fx.storage.expire_leases(None, NOW)
    claims, wake = await fx.storage.claim_and_next_wake("w1", 5, NOW, LEASE, pks)
    assert len(claims) == 1
    assert wake is None is await fx.storage.next_wake_at(pks)


async def test_usage_counts_running_and_queued(fx: Fixture) -> None:
    await _cap(fx, 2)
    await _create_in_order(fx, 5)
    assert await fx.storage.concurrency_usage(fx.workflow.pk, NOW) == (0, 5)
    await _claim_all(fx, "w1")
    assert await fx.storage.concurrency_usage(fx.workflow.pk, NOW) == (2, 3)


async def test_no_limit_claims_as_before(storage: Storage) -> None:
    workflow = await storage.register_workflow(
        "acct", "plain", WorkflowDefinition("Plain", "shop.plain"), NOW
    )
    await storage.create_instances(
        workflow.pk,
        workflow.version.id,
        [NewInstance(f"p{n}", b"{}") for n in range(4)],
        NOW,
        skip_existing=False,
    )
    claims = await storage.claim_runnable("w1", 10, NOW, LEASE, None)
    assert len(claims) == 4
