"""What only the PostgreSQL store has: wake-ups across processes and lost connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from stepstone.storage.base import Claim, NewEvent, NewInstance, WorkflowDefinition
from stepstone.storage.postgres import PostgresStorage
from tests.storage.conftest import LEASE, NOW


@pytest.fixture
async def pg(pg_database: str) -> AsyncIterator[PostgresStorage]:
    store = PostgresStorage(pg_database)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def terminate_backends(url: str) -> int:
    """Kill every other connection to the test database, as an operator or a failover would."""
    conn = await asyncpg.connect(url)
    try:
        killed = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return len(killed)
    finally:
        await conn.close()


async def test_a_shared_store_is_never_the_sole_worker(pg: PostgresStorage) -> None:
    assert pg.sole_worker_lock() is False


async def test_notifications_wake_another_process_and_survive_a_lost_listener(
    pg: PostgresStorage, pg_database: str
) -> None:
    worker_side = PostgresStorage(pg_database)
    await worker_side.open()
    woken = asyncio.Event()
    worker_side.add_wake_listener(woken.set)
    try:
        listener = worker_side._listener
        assert listener is not None
        async with asyncio.timeout(5):
            await listener.connected.wait()
        woken.clear()
        wf = await pg.register_workflow("a", "wf", WorkflowDefinition("C", "m"), NOW)
        woken.clear()
        await pg.create_instances(
            wf.pk, wf.version.id, [NewInstance("i", b"1")], NOW, skip_existing=False
        )
        async with asyncio.timeout(5):
            await woken.wait()

        await terminate_backends(pg_database)
        woken.clear()
        async with asyncio.timeout(10):
            while not listener.connected.is_set():
                await asyncio.sleep(0.01)
            # A reconnection wakes the worker once: notifications may have been missed.
            await woken.wait()
        woken.clear()
        instance = await pg.get_instance(wf.pk, "i")
        assert instance is not None
        assert await pg.deliver_event(instance.pk, "go", b"1", NOW)
        async with asyncio.timeout(5):
            await woken.wait()
    finally:
        await worker_side.close()


async def test_operations_survive_terminated_connections(
    pg: PostgresStorage, pg_database: str
) -> None:
    wf = await pg.register_workflow("a", "wf", WorkflowDefinition("C", "m"), NOW)
    await pg.create_instances(
        wf.pk,
        wf.version.id,
        [NewInstance(f"i{n}", b"1") for n in range(20)],
        NOW,
        skip_existing=False,
    )
    claims = await pg.claim_runnable("w", 20, NOW, LEASE, None)
    assert len(claims) == 20
    assert await terminate_backends(pg_database) >= 1
    # Every pooled connection is dead now; each call must find a new one.
    assert await pg.record_progress(claims[0], [NewEvent("after-kill", NOW)]) == "running"

    stop = asyncio.Event()

    async def killer() -> int:
        kills = 0
        for _ in range(20):
            await asyncio.sleep(0.04)
            kills += await terminate_backends(pg_database)
        stop.set()
        return kills

    async def writer(claim: Claim) -> None:
        step = 0
        while not stop.is_set() or step < 3:
            name = f"s-{step}"
            pg.record_progress_nowait(claim, [NewEvent("attempt_started", NOW, None, "do", name)])
            await pg.record_progress(claim, [NewEvent("step_completed", NOW, None, "do", name)])
            step += 1

    killing = asyncio.create_task(killer())
    await asyncio.gather(*(writer(claim) for claim in claims))
    assert await killing > 0
    for claim in claims:
        events = await pg.load_events(claim.instance.pk)
        done = [e.step_name for e in events if e.type == "step_completed"]
        started = [e.step_name for e in events if e.type == "attempt_started"]
        # Exactly once each, in order, although commits were cut off mid-flight.
        assert done == [f"s-{s}" for s in range(len(done))]
        assert started == done


async def test_an_unanswered_commit_is_resolved_by_asking_the_server(pg: PostgresStorage) -> None:
    db = pg._db
    conn = await asyncpg.connect(pg.url)
    try:
        committed = await conn.fetchval("SELECT txid_current()")
        async with conn.transaction():
            aborted = await conn.fetchval("SELECT txid_current()")
            await conn.execute("SELECT 1")
            raise_later = True
        tx = conn.transaction()
        await tx.start()
        rolled_back = await conn.fetchval("SELECT txid_current()")
        await tx.rollback()
    finally:
        await conn.close()
    assert raise_later
    assert await db._committed(committed) is True
    assert await db._committed(aborted) is True
    assert await db._committed(rolled_back) is False
