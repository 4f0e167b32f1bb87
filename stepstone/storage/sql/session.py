"""One connection, in or out of a transaction, as the shared operations see it.

The operations are written once as coroutines over a ``Session``. A PostgreSQL session awaits
asyncpg. A SQLite session's methods never suspend (sqlite3 answers at once, and its writes run
inline on the loop's thread, ``sqlite_writer``), so a SQLite store runs the same coroutine to
its end inside its synchronous write job (``run_to_end``).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from stepstone.storage.sql.dialect import Dialect

T = TypeVar("T")
Row = Sequence[Any]


class Session(Protocol):
    async def all(self, sql: str, *args: Any) -> list[Row]: ...

    async def one(self, sql: str, *args: Any) -> Row | None: ...

    async def run(self, sql: str, *args: Any) -> int:
        """Run a statement; how many rows it changed."""
        ...

    async def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


Job = Callable[[Session], Coroutine[Any, Any, T]]


class SqlStore:
    """What a store gives the shared operations mixed into it."""

    dialect: Dialect

    async def _sql_read(self, job: Job[T]) -> T:
        raise NotImplementedError

    async def _sql_write(self, job: Job[T]) -> T:
        """``job`` in one transaction of its own."""
        raise NotImplementedError


class SqliteSession:
    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def all(self, sql: str, *args: Any) -> list[Row]:
        return self._conn.execute(sql, args).fetchall()

    async def one(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = self._conn.execute(sql, args).fetchone()
        return row

    async def run(self, sql: str, *args: Any) -> int:
        return self._conn.execute(sql, args).rowcount

    async def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)


def run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (over a ``SqliteSession``)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a SQLite session's job waited on something else")


@functools.lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """PostgreSQL's numbered placeholders for ``sql``'s ``?``s."""
    count = iter(range(1, 1 << 16))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


class PostgresSession:
    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def all(self, sql: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self._conn.fetch(numbered(sql), *args)
        return rows

    async def one(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = await self._conn.fetchrow(numbered(sql), *args)
        return row

    async def run(self, sql: str, *args: Any) -> int:
        status: str = await self._conn.execute(numbered(sql), *args)
        # "UPDATE 3", "INSERT 0 3", "DELETE 3": the count comes last.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(numbered(sql), rows)


def on_postgres(job: Job[T]) -> Callable[[Any], Awaitable[T]]:
    """``job`` as a PostgreSQL store's connection job."""
    return lambda conn: job(PostgresSession(conn))


def on_sqlite(job: Job[T]) -> Callable[[sqlite3.Connection], T]:
    """``job`` as a SQLite store's synchronous connection job."""
    return lambda conn: run_to_end(job(SqliteSession(conn)))
