"""Several hosts in one PostgreSQL URL, and the watch on commits that do not come back.

Quick: no clusters of their own. The first host of a list is a port nobody listens on and the
second the shared test server, so the store must skip the dead one; the watch is driven with
writes held open by the test.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import pytest

from stepstone.storage import InvalidDatabaseURL, open_storage
from stepstone.storage.outage import StoreHealth
from stepstone.storage.postgres_hosts import (
    CommitsStalled,
    CommitWatch,
    postgres_dsn,
    postgres_hosts,
)


def test_a_list_of_hosts_means_read_write_unless_it_says_otherwise() -> None:
    url = "postgresql://u:p@h1:5432,h2:5433/db"
    assert postgres_dsn(url) == url + "?target_session_attrs=read-write"
    assert postgres_dsn(url + "?sslmode=disable") == (
        url + "?sslmode=disable&target_session_attrs=read-write"
    )
    explicit = url + "?target_session_attrs=any"  # every node writes (CockroachDB)
    assert postgres_dsn(explicit) == explicit
    single = "postgresql://u@h1:5432/db"
    assert postgres_dsn(single) == single
    assert postgres_hosts("postgresql://u@[::1]:5432,h2,h3:7/db") == [
        ("::1", 5432),
        ("h2", None),
        ("h3", 7),
    ]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://h1,h2/db?target_session_attrs=standby", "cannot take writes"),
        ("postgresql://h1,h2/db?target_session_attrs=read-only", "cannot take writes"),
        ("postgresql://h1/db?target_session_attrs=sometimes", "must be one of"),
        ("postgresql://h1:5432,h2:port/db", "'port' of host 'h2' is not a port number"),
        ("postgresql://h1:5432,h2:70000/db", "not a port number"),
        ("postgresql://h1,,h2/db", "a host in the list is empty"),
    ],
)
def test_a_bad_postgres_url_is_refused_naming_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(InvalidDatabaseURL, match=says):
        open_storage(url)


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_store_skips_a_host_that_is_down(pg_database: str) -> None:
    parts = urlsplit(pg_database)
    hosts = f"127.0.0.1:{_dead_port()},{parts.hostname}:{parts.port or 5432}"
    url = f"postgresql://{parts.username}@{hosts}{parts.path}"
    store = open_storage(url)
    await store.open()
    try:
        assert await store.list_workflows(None, None, 0, 10) is not None
    finally:
        await store.close()


async def until_stalled(watch: CommitWatch) -> None:
    async with asyncio.timeout(5):
        while not watch.stalled:
            await asyncio.sleep(0.01)


async def test_a_write_that_waits_too_long_is_an_outage_until_one_completes() -> None:
    health = StoreHealth("PostgreSQL")
    watch = CommitWatch(health, stall_after=0.05)
    held = asyncio.Event()

    async def write() -> None:
        with watch.pending():
            await held.wait()

    task = asyncio.create_task(write())
    await until_stalled(watch)
    assert isinstance(health.failing, CommitsStalled)
    held.set()
    await task
    assert health.failing is None and not watch.stalled


async def test_a_stalled_write_given_up_leaves_a_probe_to_end_the_episode() -> None:
    health = StoreHealth("PostgreSQL")
    watch = CommitWatch(health, stall_after=0.05)
    commits_flow = asyncio.Event()
    probing = asyncio.Event()

    async def probe() -> None:
        probing.set()
        with watch.pending():
            await commits_flow.wait()

    watch.probe = probe

    async def write() -> None:
        with watch.pending():
            await asyncio.Event().wait()

    task = asyncio.create_task(write())
    await until_stalled(watch)
    task.cancel()  # as the API cuts a request short
    await asyncio.wait_for(probing.wait(), 5)
    # Nothing proved that commits go through: still an outage, the probe waiting like any write.
    assert isinstance(health.failing, CommitsStalled)
    commits_flow.set()
    async with asyncio.timeout(5):
        while health.failing is not None:
            await asyncio.sleep(0.01)
    await watch.stop_probing()
