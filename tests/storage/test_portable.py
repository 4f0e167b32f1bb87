"""The portable PostgreSQL mode (``postgresql+portable://``): the store sends no notification and
takes no advisory lock; row locks on ``stepstone_internal.locks`` serialise what advisory locks
did. The contract suite runs on it as a backend of its own (``tests/conftest.py``); these check
what that suite cannot see.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from stepstone.storage import open_storage
from stepstone.storage.base import NewInstance, Release, Storage, WorkflowDefinition
from stepstone.storage.postgres import PostgresStorage
from stepstone.storage.postgres_db import CHANNEL, CONTROL_CHANNEL
from stepstone.storage.postgres_portable import LOCKS
from tests.conftest import pg_database_url, portable_url, run_pg_admin
from tests.storage.conftest import LEASE, NOW
from tests.storage.test_migrations import DECLARED, postgres_schema

SENTINEL = "sentinel"


def test_the_url_suffix_chooses_the_portable_mode() -> None:
    for url in ("postgresql+portable://u@h:5432/db", "postgres+portable://u@h:5432/db"):
        store = open_storage(url)
        assert isinstance(store, PostgresStorage) and store.push_wakes is False
        # asyncpg is given the plain scheme.
        assert store.url == "postgresql://u@h:5432/db"
    assert open_storage("postgresql://u@h/db").push_wakes is True
    # Several hosts still default to the primary.
    assert open_storage("postgresql+portable://u@a,b/db").url.endswith(
        "?target_session_attrs=read-write"
    )


class Heard:
    """Every notification on the wake and control channels, from a connection of its own."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.payloads: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def _heard(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self.payloads.put_nowait((channel, payload))

    @classmethod
    async def on(cls, url: str) -> Heard:
        heard = cls(await asyncpg.connect(url))
        for channel in (CHANNEL, CONTROL_CHANNEL):
            await heard.conn.add_listener(channel, heard._heard)
        return heard

    async def before_sentinel(self, url: str) -> list[tuple[str, str]]:
        """What arrived before a notification sent now: notifications arrive in commit order,
        so whatever the work committed earlier sent comes first."""
        sender = await asyncpg.connect(url)
        try:
            await sender.execute("SELECT pg_notify($1, $2)", CHANNEL, SENTINEL)
        finally:
            await sender.close()
        heard = []
        async with asyncio.timeout(10):
            while (got := await self.payloads.get()) != (CHANNEL, SENTINEL):
                heard.append(got)
        return heard


@pytest.fixture
async def heard(pg_database: str) -> AsyncIterator[Heard]:
    listening = await Heard.on(pg_database)
    try:
        yield listening
    finally:
        await listening.conn.close()


async def _open(url: str) -> Storage:
    store = open_storage(url)
    await store.open()
    return store


async def _every_notifying_write(store: Storage) -> None:
    """A create, claims, an event, a release that wakes soon, a child's end (the trigger),
    a stop, a lease expiry, a delete and a waited-for child's delete: each notifies in the
    plain mode."""
    workflow = await store.register_workflow("acct", "w", WorkflowDefinition("W", "w"), NOW)
    pk, version = workflow.pk, workflow.version.id
    await store.create_instances(
        pk,
        version,
        [NewInstance(i, b"{}") for i in ("parent", "child", "other", "p2", "c2")],
        NOW,
        skip_existing=False,
    )
    await store.create_instances(pk, version, [NewInstance("more", b"{}")], NOW, skip_existing=True)
    claims = {c.instance.id: c for c in await store.claim_runnable("w1", 10, NOW, LEASE, [pk])}
    child = claims["child"].instance.pk
    assert await store.link_child(claims["parent"], child) == "running"
    assert await store.link_child(claims["p2"], claims["c2"].instance.pk) == "running"
    await store.release_instance(claims["p2"], Release("waiting"), NOW)
    await store.release_instance(claims["parent"], Release("waiting"), NOW)
    await store.release_instance(claims["child"], Release("complete", output=b"1"), NOW)
    # The trigger made the parent runnable.
    again = {c.instance.id: c for c in await store.claim_runnable("w2", 10, NOW, LEASE, [pk])}
    assert set(again) == {"parent"}
    await store.release_instance(again["parent"], Release("complete", output=b"2"), NOW)
    await store.deliver_event(claims["other"].instance.pk, "go", b"{}", NOW)
    await store.release_instance(claims["other"], Release("waiting", runnable_at=NOW + 1), NOW)
    assert await store.expire_leases("w1", NOW) == 2  # "more", "c2"
    # c2 is still running: deleting it wakes p2, which waits on it.
    await store.delete_instances(pk, ["parent", "other", "more", "c2"])
    woken = await store.claim_runnable("w3", 10, NOW, LEASE, [pk])
    assert [c.instance.id for c in woken] == ["p2"]


@pytest.mark.parametrize("portable", [False, True], ids=["plain", "portable"])
async def test_the_portable_store_sends_no_notification(
    pg_database: str, heard: Heard, portable: bool
) -> None:
    url = portable_url(pg_database) if portable else pg_database
    store = await _open(url)
    try:
        await _every_notifying_write(store)
    finally:
        await store.close()
    sent = await heard.before_sentinel(pg_database)
    if portable:
        assert sent == []
    else:  # what the portable mode leaves out
        assert {channel for channel, _ in sent} == {CHANNEL, CONTROL_CHANNEL}
        assert len(sent) >= 5


async def test_the_child_ended_trigger_is_silenced_per_connection(
    pg_database: str, heard: Heard
) -> None:
    store = await _open(pg_database)
    try:
        workflow = await store.register_workflow("acct", "w", WorkflowDefinition("W", "w"), NOW)
        pk, version = workflow.pk, workflow.version.id
        items = [NewInstance(i, b"{}") for i in ("p", "c1", "c2")]
        await store.create_instances(pk, version, items, NOW, skip_existing=False)
        claims = {c.instance.id: c for c in await store.claim_runnable("w1", 9, NOW, LEASE, [pk])}
        for child in ("c1", "c2"):
            await store.link_child(claims["p"], claims[child].instance.pk)
    finally:
        await store.close()
    await heard.before_sentinel(pg_database)  # what the setup sent

    async def end(child: str, **settings: str) -> None:
        conn = await asyncpg.connect(pg_database, server_settings=settings)
        try:
            await conn.execute(
                "UPDATE instances SET status = 'complete' WHERE workflow_pk = $1 AND id = $2",
                pk,
                child,
            )
        finally:
            await conn.close()

    await end("c1", **{"stepstone.notify": "off"})
    assert await heard.before_sentinel(pg_database) == []
    await end("c2")
    assert await heard.before_sentinel(pg_database) == [(CHANNEL, "")]


async def _waiting_on_lock(url: str, timeout: float = 10.0) -> str:
    """The query of a backend waiting for a lock, once there is one."""
    conn = await asyncpg.connect(url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                query = await conn.fetchval(
                    "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                )
                if query is not None:
                    return str(query)
                await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def _advisory_locks(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
            )
        )
    finally:
        await conn.close()


class HeldLock:
    """A transaction of its own holding one row of the lock table, as a claimer would."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def take(cls, url: str, name: str) -> HeldLock:
        conn = await asyncpg.connect(url)
        await conn.execute("BEGIN")
        await conn.execute(
            f"INSERT INTO {LOCKS} (name) VALUES ($1)"
            " ON CONFLICT (name) DO UPDATE SET name = excluded.name",
            name,
        )
        return cls(conn)

    async def release(self) -> None:
        await self.conn.execute("ROLLBACK")
        await self.conn.close()


async def test_claims_lock_rows_of_the_lock_table_not_advisory_locks(pg_database: str) -> None:
    store = await _open(portable_url(pg_database))
    try:
        capped = await store.register_workflow(
            "acct", "capped", WorkflowDefinition("W", "w", concurrency_limit=1), NOW
        )
        pks = [capped.pk]
        items = [NewInstance(i, b"{}") for i in ("a", "b", "c")]
        await store.create_instances(capped.pk, capped.version.id, items, NOW, skip_existing=False)

        # max_running: the global claim lock.
        held = await HeldLock.take(pg_database, "claim")
        claiming = asyncio.create_task(
            store.claim_runnable("w1", 10, NOW, LEASE, pks, max_running=5)
        )
        assert LOCKS in await _waiting_on_lock(pg_database)
        assert await _advisory_locks(pg_database) == 0
        await held.release()
        # This claim saw the cap: the next one locks the workflow's row first.
        assert [c.instance.id for c in await claiming] == []

        held = await HeldLock.take(pg_database, f"cap:{capped.pk}")
        claiming = asyncio.create_task(store.claim_runnable("w1", 10, NOW, LEASE, pks))
        assert LOCKS in await _waiting_on_lock(pg_database)
        assert await _advisory_locks(pg_database) == 0
        await held.release()
        assert [c.instance.id for c in await claiming] == ["a"]  # the cap holds
    finally:
        await store.close()


@pytest.fixture
def empty_pg_database() -> Iterator[str]:
    name = f"stepstone_pm_{os.getpid()}"
    run_pg_admin(lambda c: c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    run_pg_admin(lambda c: c.execute(f"CREATE DATABASE {name}"))
    try:
        yield pg_database_url(name)
    finally:
        run_pg_admin(lambda c: c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def test_portable_starters_migrate_an_empty_database_one_at_a_time(
    empty_pg_database: str,
) -> None:
    url = portable_url(empty_pg_database)
    # Several at once: they race to create the lock table, then queue on its row.
    stores = [open_storage(url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    for store in stores:
        await store.close()
    assert await postgres_schema(empty_pg_database) == json.loads(DECLARED.read_text())

    held = await HeldLock.take(empty_pg_database, "migrate")
    opening = asyncio.create_task(_open(url))
    try:
        assert LOCKS in await _waiting_on_lock(empty_pg_database)
        assert await _advisory_locks(empty_pg_database) == 0
    finally:
        await held.release()
    await (await opening).close()
