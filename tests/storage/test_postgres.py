"""What only the PostgreSQL store has: wake-ups across processes and lost connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from stepstone.storage.base import (
    Claim,
    Fenced,
    NewEvent,
    NewInstance,
    Release,
    WorkflowDefinition,
)
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


async def test_a_store_is_woken_once_by_its_own_create_and_not_by_an_end(
    pg: PostgresStorage, pg_database: str
) -> None:
    wakes: list[str] = []
    changes: list[str] = []
    pg.add_wake_listener(lambda: wakes.append("wake"))
    pg.add_change_listener(lambda: changes.append("change"))
    other = PostgresStorage(pg_database)
    await other.open()
    try:
        listener = pg._listener
        assert listener is not None
        async with asyncio.timeout(5):
            await listener.connected.wait()
        wf = await pg.register_workflow("a", "wf", WorkflowDefinition("C", "m"), NOW)
        wakes.clear()
        await pg.create_instances(
            wf.pk, wf.version.id, [NewInstance("mine", b"1")], NOW, skip_existing=False
        )
        assert wakes == ["wake"]  # at once, by the create itself
        # Notifications arrive in commit order: once the other store's create is heard, the
        # notification of this store's own create has been read too, and skipped.
        await other.create_instances(
            wf.pk, wf.version.id, [NewInstance("theirs", b"1")], NOW, skip_existing=False
        )
        async with asyncio.timeout(5):
            while len(wakes) < 2:
                await asyncio.sleep(0.005)
        assert wakes == ["wake", "wake"]
        # An end leaves nothing to claim: watchers hear of it, workers do not.
        claims = await pg.claim_runnable("w", 2, NOW, LEASE, None)
        wakes.clear()
        changes.clear()
        await pg.release_instance(claims[0], Release("complete"), NOW)
        assert (wakes, changes) == ([], ["change"])
        await pg.release_instance(claims[1], Release("waiting", runnable_at=NOW + 60_000), NOW)
        # (a release due soon is also notified to every process, this one included)
        assert (wakes[:1], changes[:2]) == (["wake"], ["change", "change"])
    finally:
        await other.close()


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


async def test_a_resent_write_is_applied_once(pg: PostgresStorage) -> None:
    """The one-round-trip writes have no transaction id to ask about when their answer is lost:
    they are sent again with ``retry`` set and must recognise that they committed."""
    wf = await pg.register_workflow("a", "wf", WorkflowDefinition("C", "m"), NOW)
    await pg.create_instances(
        wf.pk, wf.version.id, [NewInstance("i1", b"1"), NewInstance("i2", b"1")], NOW,
        skip_existing=False,
    )  # fmt: skip
    one, two = await pg.claim_runnable("w", 2, NOW, LEASE, None)
    done = [NOW, "step_completed", "do", "s-1", b"{}"]
    columns = [[value] for value in done]

    async def run(sql: str, *args: object) -> list[asyncpg.Record]:
        return await pg._db.read(lambda conn: conn.fetch(sql, *args))

    sql = "SELECT stepstone_record_progress($1, $2, $3, $4, $5, $6, $7, $8)"
    for retry in (False, True, True):
        assert await run(sql, one.instance.pk, one.epoch, retry, *columns) == [("running",)]
    many = "SELECT * FROM stepstone_record_progress_many($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    pks, epochs = [one.instance.pk, two.instance.pk], [one.epoch, two.epoch]
    for retry in (False, True):
        rows = await run(many, pks, epochs, retry, [2], *columns)
        assert [tuple(r) for r in rows] == [
            (one.instance.pk, "running"),
            (two.instance.pk, "running"),
        ]
    # Not committed before: a retry writes. Fenced: nothing, and None.
    fresh = [[value, value] for value in [NOW, "step_completed", "do", "s-2", b"{}"]]
    rows = await run(many, pks, [one.epoch + 1, two.epoch], True, [1, 2], *fresh)
    assert [tuple(r) for r in rows] == [(one.instance.pk, None), (two.instance.pk, "running")]
    for claim, names in ((one, ["s-1"]), (two, ["s-1", "s-2"])):
        events = await pg.load_events(claim.instance.pk)
        assert [e.step_name for e in events if e.type == "step_completed"] == names

    release = Release("complete", output=b"1", events=[NewEvent("workflow_completed", NOW)])
    assert await pg.release_instance(one, release, NOW) == "complete"
    # A second try of the same release finds it done and changes nothing.
    assert await pg.release_instance(one, release, NOW) == "complete"
    events = await pg.load_events(one.instance.pk)
    assert [e.type for e in events].count("workflow_completed") == 1


async def test_activations_ending_together_share_a_statement_and_each_ends_once(
    pg: PostgresStorage,
) -> None:
    wf = await pg.register_workflow("a", "wf", WorkflowDefinition("C", "m"), NOW)
    ids = [f"i{n}" for n in range(12)]
    await pg.create_instances(
        wf.pk, wf.version.id, [NewInstance(i, b"1") for i in ids], NOW, skip_existing=False
    )
    claims = await pg.claim_runnable("w", 12, NOW, LEASE, None)
    stale = Claim(claims[0].instance, "w", claims[0].epoch - 1, claims[0].wake_seq)

    def ending(n: int) -> Release:
        if n % 3 == 0:  # waiting again in a minute, with the events of its sleep
            return Release(
                "waiting",
                runnable_at=NOW + 60_000,
                events=[NewEvent("sleep_started", NOW, b"{}", "sleep", f"nap-{n}")],
            )
        return Release(
            "complete", output=str(n).encode(), events=[NewEvent("workflow_completed", NOW)]
        )

    outcomes = await asyncio.gather(
        pg.release_instance(stale, ending(0), NOW),
        *(pg.release_instance(claim, ending(n), NOW) for n, claim in enumerate(claims)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], Fenced)
    assert outcomes[1:] == ["waiting" if n % 3 == 0 else "complete" for n in range(12)]
    for n, claim in enumerate(claims):
        record = await pg.get_instance(wf.pk, claim.instance.id)
        events = [(e.type, e.step_name) for e in await pg.load_events(claim.instance.pk)]
        assert record is not None
        if n % 3 == 0:
            assert record.status == "waiting"
            assert events[-1] == ("sleep_started", f"nap-{n}")
        else:
            assert (record.status, record.output) == ("complete", str(n).encode())
            assert events.count(("workflow_completed", None)) == 1

    # Sent again (its answer lost), a many-release finds its work done and changes nothing.
    again = await pg._db.read(
        lambda conn: conn.fetch(
            "SELECT * FROM stepstone_release_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
            " $11, $12, $13, $14, $15, $16, $17)",
            [c.instance.pk for c in claims[1:3]],
            [c.epoch for c in claims[1:3]],
            [c.wake_seq for c in claims[1:3]],
            ["complete", "complete"],
            [None, None],
            [b"9", b"9"],
            [None, None],
            [None, None],
            [NOW, NOW],
            60_000,
            1_000,
            [1, 2],
            [NOW, NOW],
            ["workflow_completed", "workflow_completed"],
            [None, None],
            [None, None],
            [None, None],
        )
    )
    assert [tuple(r) for r in again] == [(c.instance.pk, "complete") for c in claims[1:3]]
    for claim in claims[1:3]:
        record = await pg.get_instance(wf.pk, claim.instance.id)
        assert record is not None and record.output != b"9"
        types = [e.type for e in await pg.load_events(claim.instance.pk)]
        assert types.count("workflow_completed") == 1


async def test_reads_asked_for_together_each_get_their_own_answer(pg_database: str) -> None:
    # Two connections: one read in flight at a time, so the others queue and share a query.
    store = PostgresStorage(pg_database, max_connections=2)
    await store.open()
    try:
        workflows = [
            await store.register_workflow("a", f"wf{n}", WorkflowDefinition("C", "m"), NOW)
            for n in range(3)
        ]
        ids = [f"i{n}" for n in range(6)]
        await store.create_instances(
            workflows[0].pk,
            workflows[0].version.id,
            [NewInstance(i, b"1") for i in ids],
            NOW,
            skip_existing=False,
        )
        claims = await store.claim_runnable("w", 6, NOW, LEASE, None)
        for n, claim in enumerate(claims[:3]):
            steps = [NewEvent("step_completed", NOW, b"{}", "do", f"s{k}") for k in range(n)]
            await store.record_progress(claim, steps)
        found: list[Any] = await asyncio.gather(
            *(store.get_workflow("a", name) for name in ("wf0", "nope", "wf2", "wf1", "wf0")),
            *(store.load_events(claim.instance.pk) for claim in claims),
        )
        assert [w.name if w else None for w in found[:5]] == ["wf0", None, "wf2", "wf1", "wf0"]
        histories = found[5:]
        for n, (claim, events) in enumerate(zip(claims, histories, strict=True)):
            expected = [f"s{k}" for k in range(n)] if n < 3 else []
            assert [e.step_name for e in events if e.type == "step_completed"] == expected
            assert events[0].type == "workflow_queued"
            assert [e.event_id for e in events] == sorted(e.event_id for e in events)
            again = await store.load_events(claim.instance.pk)
            assert again == events
    finally:
        await store.close()


async def test_many_step_results_in_one_statement_skip_the_fenced_and_keep_order(
    pg: PostgresStorage,
) -> None:
    wf = await pg.register_workflow("a", "wf", WorkflowDefinition("C", "m"), NOW)
    await pg.create_instances(
        wf.pk, wf.version.id, [NewInstance(f"i{n}", b"1") for n in range(3)], NOW,
        skip_existing=False,
    )  # fmt: skip
    claims = await pg.claim_runnable("w", 3, NOW, LEASE, None)
    epochs = [c.epoch for c in claims]
    epochs[1] += 1  # taken over meanwhile: fenced
    names = [["a", "b"], ["c"], ["d", "e", "f"]]
    of = [n + 1 for n, group in enumerate(names) for _ in group]
    flat = [name for group in names for name in group]
    rows = await pg._db.read(
        lambda conn: conn.fetch(
            "SELECT * FROM stepstone_record_progress_many($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [c.instance.pk for c in claims],
            epochs,
            False,
            of,
            [NOW] * len(flat),
            ["step_completed"] * len(flat),
            ["do"] * len(flat),
            flat,
            [b"{}"] * len(flat),
        )
    )
    assert [tuple(r) for r in rows] == [
        (claims[0].instance.pk, "running"),
        (claims[1].instance.pk, None),
        (claims[2].instance.pk, "running"),
    ]
    for claim, expected in zip(claims, [["a", "b"], [], ["d", "e", "f"]], strict=True):
        events = await pg.load_events(claim.instance.pk)
        assert [e.step_name for e in events if e.type == "step_completed"] == expected


async def test_a_write_cancelled_mid_transaction_is_not_handed_back_inside_it(
    pg: PostgresStorage,
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _, context: reported.append(str(context.get("message"))))
    try:
        # Cancelled at every point of BEGIN, statement and COMMIT, as a stopping worker's are.
        for turns in [n % 7 for n in range(70)]:
            writing = asyncio.ensure_future(pg._db.write(lambda conn: conn.execute("SELECT 1")))
            for _ in range(turns):
                await asyncio.sleep(0)
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writing
        # The pool goes on serving, and nothing was handed back with a transaction open.
        for _ in range(3):
            assert await pg._db.read(lambda conn: conn.fetchval("SELECT 1")) == 1
    finally:
        loop.set_exception_handler(None)
    assert not [m for m in reported if "active transaction" in m], reported[:3]


async def test_a_first_claim_brings_the_history_and_a_later_one_leaves_it_to_a_read(
    pg: PostgresStorage,
) -> None:
    """A new instance's history comes with its claim (one round trip less); once a holder
    has had it, its history is read afresh after the claim, which could not see what that
    holder committed after the claim statement's snapshot."""
    wf = await pg.register_workflow("a", "wf", WorkflowDefinition("C", "m"), NOW)
    await pg.create_instances(wf.pk, wf.version.id, [NewInstance("i1", b"1")], NOW,
                              skip_existing=False)  # fmt: skip
    (first,) = await pg.claim_runnable("w", 1, NOW, LEASE, None)
    assert first.history is not None
    assert list(first.history) == await pg.load_events(first.instance.pk)
    assert [e.type for e in first.history] == ["workflow_queued"]
    await pg.record_progress(first, [NewEvent("workflow_started", NOW)])
    await pg.release_instance(first, Release("waiting", runnable_at=NOW), NOW)
    (second,) = await pg.claim_runnable("w", 1, NOW, LEASE, None)
    assert second.epoch > first.epoch
    assert second.history is None


async def test_the_server_ends_a_session_left_idle_in_a_transaction(pg: PostgresStorage) -> None:
    """A client that stops between a statement and its COMMIT would keep its row locks, and so
    the instances they cover, from every claim and heartbeat: its sessions carry a timeout."""
    timeout = await pg._db.read(
        lambda conn: conn.fetchval("SHOW idle_in_transaction_session_timeout")
    )
    assert timeout == "10s"
