"""Connections of the PostgreSQL store: a pool whose transactions survive lost connections,
the LISTEN connection that wakes workers, and the migrations.

A transaction that fails because its connection died (``pg_terminate_backend``, a server
restart, a network cut) is retried on a fresh connection with backoff. Only a failure during
COMMIT is ambiguous: the transaction may or may not have committed. Each write transaction
therefore learns its own transaction id first and, when COMMIT's answer is lost, asks the
server with ``txid_status`` whether it committed, so a write is never applied twice and never
silently dropped.

While the database stays unreachable, the store's ``StoreHealth`` is in an outage episode,
logged once when it begins; the API answers 503 meanwhile (``stepstone.api.outage``), and the
retries here go on at most a second apart, so workers resume within about a second of the
database coming back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import asyncpg

from stepstone.storage.migrations import migration_files
from stepstone.storage.outage import StoreHealth, StoreUnreachable
from stepstone.storage.postgres_hosts import CommitWatch, commit_watch

T = TypeVar("T")
Job = Callable[[Any], Awaitable[T]]
log = logging.getLogger("stepstone.storage")

CHANNEL = "stepstone_wake"
# Payload "pk:epoch,pk:epoch,..." ("pk:" for a deleted instance): claims older are void.
CONTROL_CHANNEL = "stepstone_control"
_BEGIN_NOT_DURABLE = "BEGIN; SET LOCAL synchronous_commit = off"
# Any fixed key: the lock only serialises migrations of concurrently starting processes.
_MIGRATION_LOCK = 0x5735_7E90


class StorageUnavailable(StoreUnreachable):
    """The database stayed unreachable for longer than the store's retry window."""


class _Lost(Exception):
    """The connection died under a statement."""


class _Ambiguous(Exception):
    def __init__(self, xid: int | None, result: Any) -> None:
        super().__init__(xid)
        self.xid = xid
        self.result = result


_TRANSIENT = (
    _Lost,
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 admin shutdown, 57P03 starting up
    asyncpg.exceptions.TransactionRollbackError,  # deadlock or serialization failure
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    # Failover: no listed host takes writes yet (the standby is not promoted), or this
    # connection's server was made read-only to fence it; a new connection finds the primary.
    asyncpg.exceptions.TargetServerAttributeNotMatched,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)

# Not outages: the database answered, and the transaction is simply tried again.
_CONTENTION = (asyncpg.exceptions.TransactionRollbackError,)
# The longest pause between retries: bounds how long after the database is back a waiting
# worker notices.
_MAX_RETRY_DELAY = 1.0
# How long establishing a connection may take before it counts as a failure (asyncpg's
# default is 60 s, which would hide an unreachable server behind a minute of silence).
_CONNECT_TIMEOUT = 10.0

# Failed (re)connections in a row of the listener before it warns (about 1.5 s of backoff).
_LISTENER_WARN_AFTER = 5

_CLIENT_ERRORS = (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)


class _PoolFloorDuringOutage(logging.Filter):
    """Demote asyncpg's traceback for each failed attempt to reconnect a pool's minimum of
    connections to debug when the failure is the database being unreachable: the store's
    health logs that episode once (issue 11: one line, not a traceback per attempt)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _TRANSIENT) and str(record.msg).startswith("Failed to restore the pool"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


logging.getLogger("asyncpg.pool").addFilter(_PoolFloorDuringOutage())


def _discard_if_broken(conn: Any, exc: BaseException) -> None:
    """Turn a client-side error on a dying connection into ``_Lost``, closing the connection.

    A connection the server has just terminated can still look open to the pool for a moment
    and then fail its next statement with a protocol-state error before anything was sent.
    """
    if conn.is_closed() or isinstance(exc, asyncpg.exceptions.InternalClientError):
        conn.terminate()
        raise _Lost(str(exc)) from exc


class _PoolConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection handed back without asyncpg's reset query.

    The reset (``UNLISTEN *``, ``RESET ALL``, unlocking advisory locks) costs a round trip on
    every release; pooled connections never LISTEN, SET only transaction-local settings and
    take only transaction-scoped advisory locks, so there is nothing to reset. asyncpg 0.30
    renamed the hook to ``get_reset_query``; both are overridden for the supported range.
    """

    def get_reset_query(self) -> str:
        return ""

    def _get_reset_query(self) -> str:
        return ""


class Database:
    """A pool of connections with retrying transactions."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int,
        max_size: int,
        retry_for: float = 120.0,
        health: StoreHealth | None = None,
    ) -> None:
        self.dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._retry_for = retry_for
        self._pool: Any = None
        self.health = health or StoreHealth("PostgreSQL")
        self._watch = commit_watch(self.health)
        if self._watch.probe is None:
            self._watch.probe = self._probe_commit

    async def start(self) -> None:
        async def create() -> None:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                command_timeout=60,
                timeout=_CONNECT_TIMEOUT,
                connection_class=_PoolConnection,
            )

        await self._retrying(create)

    async def _probe_commit(self) -> None:
        await self.write(lambda conn: conn.fetchval("SELECT 1"))

    async def close(self) -> None:
        if self._watch.probe == self._probe_commit:
            await self._watch.stop_probing()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                async with asyncio.timeout(10):
                    await pool.close()
            except TimeoutError:
                pool.terminate()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        conn = await self._pool.acquire()
        try:
            yield conn
        except _CLIENT_ERRORS as exc:
            _discard_if_broken(conn, exc)
            raise
        except asyncpg.exceptions.ReadOnlySQLTransactionError:
            # Its server no longer takes writes (fenced): the retry must connect anew.
            conn.terminate()
            raise
        except asyncio.CancelledError:
            # Cancelled mid-statement (a worker stopping): the connection's state is unknown,
            # and handing it back inside a transaction makes asyncpg log an error at reset.
            # A fresh one replaces it.
            conn.terminate()
            raise
        finally:
            try:
                await self._pool.release(conn)
            except Exception as exc:
                # The pool has closed the connection already; what happened inside stands
                # (a committed transaction must not be retried because its reset failed).
                log.debug("dropped a broken connection on release: %r", exc)

    async def _retrying(self, fn: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_for
        delay = 0.05
        while True:
            try:
                result = await fn()
            except _CONTENTION as exc:
                if loop.time() + delay > deadline:
                    raise
                log.warning("transaction rolled back by the server (%r); retrying", exc)
            except _TRANSIENT as exc:
                unreachable = StorageUnavailable(f"the database is unreachable: {exc!r}")
                self.health.failed(unreachable)
                if loop.time() + delay > deadline:
                    raise unreachable from exc
                # The episode was logged once by the health; each retry only at debug.
                log.debug("database connection problem (%r); retrying in %.2fs", exc, delay)
            else:
                # Reads succeed while commits wait for a synchronous standby: only the end of
                # the wait (CommitWatch) ends that episode.
                if not self._watch.stalled:
                    self.health.recovered()
                return result
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_DELAY)

    async def read(self, job: Job[T]) -> T:
        """Run ``job(conn)`` outside a transaction, again on a new connection if it dies."""

        async def attempt() -> T:
            async with self._connection() as conn:
                return await job(conn)

        return await self._retrying(attempt)

    async def write(self, job: Job[T]) -> T:
        """Run ``job(conn)`` in one transaction, exactly once however connections fail."""

        async def with_xid(conn: Any) -> tuple[int, T]:
            xid = await conn.fetchval("SELECT txid_current()")
            return int(xid), await job(conn)

        return await self.write_reporting_xid(with_xid)

    async def write_reporting_xid(
        self, job: Job[tuple[int | None, T]], *, durable: bool = True
    ) -> T:
        """As ``write``, for a job that returns ``(txid_current(), result)`` itself: a hot
        write can ask for its transaction id in its own statement and save a round trip. A
        job that wrote nothing may report None: its result stands whether or not it commits.

        ``durable=False`` commits without waiting for the WAL flush (claims, attempt starts:
        losing one in a crash only means the work is claimed or attempted again; the next
        durable commit flushes it anyway)."""
        begin = "BEGIN" if durable else _BEGIN_NOT_DURABLE

        async def attempt() -> T:
            async with self._connection() as conn:
                try:
                    # A commit without the WAL flush waits for no standby either.
                    watch = self._watch if durable else None
                    return await self._transaction(conn, job, begin, watch)
                except _Ambiguous as ambiguous:
                    if ambiguous.xid is None or await self._committed(ambiguous.xid):
                        result: T = ambiguous.result
                        return result
                    raise _Lost("the transaction was rolled back with its connection") from None

        return await self._retrying(attempt)

    async def idempotent(self, job: Callable[[Any, bool], Awaitable[T]]) -> T:
        """Run ``job(conn, retry)``: one statement in its own implicit transaction, so one
        round trip, BEGIN and COMMIT included.

        When the connection dies under it, nobody can tell whether it committed, so it is sent
        again on a fresh connection with ``retry`` True: the statement itself must recognise a
        write that already committed and not apply it twice (see migration 0003).
        """
        tries = 0

        async def attempt() -> T:
            nonlocal tries
            tries += 1
            async with self._connection() as conn:
                with self._watch.pending():
                    return await job(conn, tries > 1)

        return await self._retrying(attempt)

    @staticmethod
    async def _transaction(
        conn: Any, job: Job[tuple[int | None, T]], begin: str, watch: CommitWatch | None
    ) -> T:
        # Plain statements rather than asyncpg's Transaction, so that BEGIN can carry the
        # transaction's settings in the same round trip.
        await conn.execute(begin)
        try:
            xid, result = await job(conn)
        except BaseException:
            with suppress(Exception):
                await conn.execute("ROLLBACK")
            raise
        try:
            # Only the COMMIT is watched: a long transaction (a migration, a bulk action) is
            # not a held commit.
            if watch is None:
                await conn.execute("COMMIT")
            else:
                with watch.pending():
                    await conn.execute("COMMIT")
        except (*_TRANSIENT, *_CLIENT_ERRORS) as exc:
            raise _Ambiguous(xid, result) from exc
        return result

    async def _committed(self, xid: int) -> bool:
        async def status() -> str | None:
            async with self._connection() as conn:
                value: str | None = await conn.fetchval("SELECT txid_status($1)", xid)
                return value

        while True:
            found = await self._retrying(status)
            # A terminated backend may still be finishing its transaction for a moment.
            if found != "in progress":
                return found == "committed"
            await asyncio.sleep(0.02)

    async def migrate(self) -> int:
        """Apply pending migrations in one transaction; concurrent starters wait their turn."""

        async def job(conn: Any) -> int:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            for number, sql in migration_files("postgres"):
                if number > current:
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_version VALUES ($1)", number)
                    current = number
            return int(current)

        return await self.write(job)


class Listener:
    """A dedicated connection LISTENing on the wake channel, re-established when lost.

    ``on_wake`` runs on every notification, and after every (re)connection because
    notifications sent while disconnected are gone; the worker's polling covers the gap.
    """

    def __init__(
        self,
        dsn: str,
        on_wake: Callable[[], None],
        ping_every: float = 5.0,
        on_control: Callable[[str], None] | None = None,
        health: StoreHealth | None = None,
    ) -> None:
        self._dsn = dsn
        self._health = health
        self._on_wake = on_wake
        self._on_control = on_control
        self._ping_every = ping_every
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def _control(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if self._on_control is not None:
            self._on_control(payload)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stepstone-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.05
        failures = 0  # attempts in a row that did not leave a connection listening
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, lambda *_: self._on_wake())
                if self._on_control is not None:
                    await conn.add_listener(CONTROL_CHANNEL, self._control)
                self.connected.set()
                delay, failures = 0.05, 0
                self._on_wake()
                while not lost.is_set():
                    try:
                        async with asyncio.timeout(self._ping_every):
                            await lost.wait()
                    except TimeoutError:
                        # A silent network cut leaves the socket open: ask, and time out.
                        async with asyncio.timeout(self._ping_every):
                            await conn.fetchval("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                # A lost connection alone is routine (polling covers the gap), and during an
                # outage the store's health has said so once. Worth a warning: reconnecting
                # keeps failing while the rest of the store is fine.
                outage = self._health is not None and self._health.failing is not None
                level = logging.WARNING if failures == _LISTENER_WARN_AFTER else logging.DEBUG
                log.log(
                    logging.DEBUG if outage else level,
                    "wake-up listener lost its connection (%r); reconnecting",
                    exc,
                )
            finally:
                self.connected.clear()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
