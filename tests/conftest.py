"""Shared fixtures: every storage and engine scenario runs on each real backend.

``backend_url`` is parametrised over the in-memory store, a fresh SQLite file, and a fresh
PostgreSQL database (created from a migrated template for speed).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from stepstone.storage import open_storage
from stepstone.storage.base import Storage

PG_URL = os.environ.get("STEPSTONE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["memory", "sqlite", "postgres"]
# And PostgreSQL in the portable mode (postgresql+portable://): the store's contract and the
# engine run on it too (tests/storage, tests/engine override backend_url with these).
WITH_PORTABLE = [*BACKENDS, "portable"]
T = TypeVar("T")
_pg_names = itertools.count()


def pg_database_url(name: str) -> str:
    """``PG_URL`` with its database replaced by ``name``."""
    parts = urlsplit(PG_URL)
    return urlunsplit(parts._replace(path="/" + name))


def run_pg_admin(job: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``job(conn)`` on the maintenance database, on its own thread and event loop.

    Sync fixtures must not start a loop on the test's thread, which pytest-asyncio owns.
    """

    async def main() -> T:
        conn = await asyncpg.connect(PG_URL)
        try:
            return await job(conn)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


class PgDatabases:
    """Copies of a migrated template database, made a few ahead on a background thread.

    CREATE DATABASE costs most of a second here (it syncs the copy to disk); copies made in
    parallel ahead of need, and drops done behind, keep that off each test's clock.
    """

    AHEAD = 4

    def __init__(self, template: str) -> None:
        self.template = template
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ready: deque[Future[str]] = deque()
        self._drops: list[Future[None]] = []
        for _ in range(self.AHEAD):
            self._ready.append(self._submit(self._create()))

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    @staticmethod
    async def _admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def _create(self) -> str:
        name = f"stepstone_t_{os.getpid()}_{next(_pg_names)}"
        await self._admin(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        return name

    def take(self) -> str:
        ready = self._ready.popleft()
        self._ready.append(self._submit(self._create()))
        return ready.result()

    def give_back(self, name: str) -> None:
        self._drops.append(
            self._submit(self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        )

    def close(self) -> None:
        for ready in self._ready:
            self.give_back(ready.result())
        for drop in self._drops:
            drop.result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    """A database migrated once per session; each test gets a copy (CREATE DATABASE TEMPLATE)."""
    template = f"stepstone_tpl_{os.getpid()}"

    async def create(conn: Any) -> None:
        await conn.execute(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {template}")

    async def migrate() -> None:
        store = open_storage(pg_database_url(template))
        await store.open()
        await store.close()

    run_pg_admin(create)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, migrate()).result()
    databases = PgDatabases(template)
    try:
        yield databases
    finally:
        databases.close()
        run_pg_admin(lambda c: c.execute(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)"))


@pytest.fixture
def pg_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database, dropped after the test."""
    databases: PgDatabases = request.getfixturevalue("pg_databases")
    name = databases.take()
    try:
        yield pg_database_url(name)
    finally:
        databases.give_back(name)


def portable_url(url: str) -> str:
    """A PostgreSQL URL in the portable mode."""
    return url.replace("postgresql://", "postgresql+portable://", 1)


def backend_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of ``request.param``'s backend, fresh for the test."""
    kind = request.param
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'stepstone.db'}"
    elif kind == "portable":
        yield portable_url(request.getfixturevalue("pg_database"))
    else:
        yield request.getfixturevalue("pg_database")


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_urls(request, tmp_path)


@pytest.fixture
async def storage(backend_url: str) -> AsyncIterator[Storage]:
    store = open_storage(backend_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
