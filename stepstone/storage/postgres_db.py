"""Connections of the PostgreSQL store: a pool whose transactions survive lost connections,
the LISTEN connection that wakes workers, and the migrations.

A transaction that fails because its connection died (``pg_terminate_backend``, a server
restart, a network cut, a failover) is retried on a fresh connection with backoff. Only a
failure during COMMIT is ambiguous: the transaction may or may not have committed. Each write
transaction therefore inserts a random commit mark (migration 0013) in the message that
commits it, and when COMMIT's answer is lost the store settles the question by what is stored:
it inserts the same mark, flagged as a veto, on whichever server is the primary now. Finding
the transaction's own mark proves it committed there; otherwise the veto, once in, keeps it
from ever committing, and the transaction is run again. So a write is never applied twice and
never silently dropped, after a crash or a promotion alike. (Transaction ids cannot settle it:
``txid_status`` on a promoted standby, or on a server restarted without the transaction's WAL,
may answer for a different transaction that was given the same id.)

While the database stays unreachable, the store's ``StoreHealth`` is in an outage episode,
logged once when it begins; the API answers 503 meanwhile (``stepstone.web.common.outage``), and the
retries here go on at most a second apart, so workers resume within about a second of the
database coming back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import asyncpg

from stepstone.storage.migrations import migration_files
from stepstone.storage.outage import StoreHealth, StoreUnreachable
from stepstone.storage.postgres_hosts import CommitWatch, commit_watch
from stepstone.storage.postgres_portable import MIGRATION_LOCK, NO_NOTIFY, create_lock_table

T = TypeVar("T")
Job = Callable[[Any], Awaitable[T]]
log = logging.getLogger("stepstone.storage")

CHANNEL = "stepstone_wake"
# Payload "pk:epoch,pk:epoch,..." ("pk:" for a deleted instance): claims older are void.
CONTROL_CHANNEL = "stepstone_control"
_BEGIN_NOT_DURABLE = "BEGIN; SET LOCAL synchronous_commit = off"
# Every transaction here is sent statement after statement, never held open for other work: a
# session idle inside one has lost its client (its row locks would keep the instances it holds
# from every worker's claims, and its own heartbeat, for good). The server ends it instead.
IDLE_IN_TRANSACTION = {"idle_in_transaction_session_timeout": "10s"}
# Outside the public schema: a PostgreSQL mechanism, not part of the data model both dialects
# declare (tests/storage/schema.json).
COMMIT_MARKS = "stepstone_internal.commit_marks"
# Marks older than this are deleted (``forget_marks``); a lost commit is settled only within
# half of it, so a mark is never looked for after it may have gone.
MARKS_KEPT_S = 15 * 60
_MARK_TRUSTED_S = MARKS_KEPT_S / 2
_VETO = (
    f"INSERT INTO {COMMIT_MARKS} (token, veto) VALUES ($1, true)"
    f" ON CONFLICT (token) DO UPDATE SET veto = {COMMIT_MARKS}.veto RETURNING veto"
)
# Any fixed key: the lock only serialises migrations of concurrently starting processes.
_MIGRATION_LOCK = 0x5735_7E90


class StorageUnavailable(StoreUnreachable):
    """The database stayed unreachable for longer than the store's retry window."""


class CommitUnknown(StorageUnavailable):
    """A COMMIT's answer was lost and whether it committed could not be told after: the
    database stayed away too long to be asked, or the mark that would say is too old."""


class _Lost(Exception):
    """The connection died under a statement."""


class _Ambiguous(Exception):
    """COMMIT's answer was lost. ``mark`` is the commit mark sent with it, None for a
    transaction that wrote nothing (its result stands either way) or one run without a mark
    (which is then simply run again)."""

    def __init__(self, mark: uuid.UUID | None, wrote: bool, result: Any, sent: float) -> None:
        super().__init__(mark)
        self.mark = mark
        self.wrote = wrote
        self.result = result
        self.sent = sent


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

    # Whether writes on this connection notify the wake and control channels.
    push_wakes = True

    def get_reset_query(self) -> str:
        return ""

    def _get_reset_query(self) -> str:
        return ""


class _PortableConnection(_PoolConnection):
    """A connection of the portable mode, which never notifies (``postgres_portable``)."""

    push_wakes = False


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
        portable: bool = False,
    ) -> None:
        self.dsn = dsn
        self.portable = portable
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
                connection_class=_PortableConnection if self.portable else _PoolConnection,
                server_settings={**IDLE_IN_TRANSACTION, **(NO_NOTIFY if self.portable else {})},
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

        async def wrote(conn: Any) -> tuple[bool, T]:
            return True, await job(conn)

        return await self.write_reporting_xid(wrote)

    async def write_reporting_xid(
        self, job: Job[tuple[object | None, T]], *, durable: bool = True, marked: bool = True
    ) -> T:
        """As ``write``, for a job that returns ``(wrote, result)`` itself, where ``wrote`` is
        None if the job wrote nothing (hot writes report their ``txid_current()``): a
        transaction that wrote nothing commits without a mark, and its result stands whether
        or not it commits.

        ``durable=False`` commits without waiting for the WAL flush (attempt starts: losing
        one in a crash only means the step is attempted again; the next durable commit flushes
        it anyway). ``marked=False`` is for a job that is safe to run twice (the migrations,
        which must run before the marks' table exists): a lost COMMIT simply runs it again."""
        begin = "BEGIN" if durable else _BEGIN_NOT_DURABLE

        async def attempt() -> T:
            async with self._connection() as conn:
                try:
                    # A commit without the WAL flush waits for no standby either.
                    watch = self._watch if durable else None
                    return await self._transaction(conn, job, begin, watch, marked)
                except _Ambiguous as ambiguous:
                    if not ambiguous.wrote:
                        result: T = ambiguous.result
                        return result
                    if ambiguous.mark is not None and await self._committed(
                        ambiguous.mark, ambiguous.sent
                    ):
                        result = ambiguous.result
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

    async def once(self, job: Callable[[Any, uuid.UUID], Awaitable[T]], recover: Job[T]) -> T:
        """Run ``job(conn, mark)``: one statement in its own implicit transaction that inserts
        ``mark`` into the commit marks itself, so one round trip, BEGIN and COMMIT included.

        When its answer is lost the mark settles whether it committed, as for a transaction:
        if it did, ``recover(conn)`` reads back what it wrote; if not, it is sent again (with
        a new mark)."""
        loop = asyncio.get_running_loop()

        async def attempt() -> T:
            mark, sent = uuid.uuid4(), loop.time()
            try:
                async with self._connection() as conn:
                    with self._watch.pending():
                        return await job(conn, mark)
            except (*_TRANSIENT, *_CLIENT_ERRORS) as exc:
                if not await self._committed(mark, sent):
                    raise _Lost("the statement was rolled back with its connection") from exc
            return await self.read(recover)

        return await self._retrying(attempt)

    @staticmethod
    async def _transaction(
        conn: Any,
        job: Job[tuple[object | None, T]],
        begin: str,
        watch: CommitWatch | None,
        marked: bool,
    ) -> T:
        # Plain statements rather than asyncpg's Transaction, so that BEGIN can carry the
        # transaction's settings, and COMMIT the commit mark, in the same round trip.
        await conn.execute(begin)
        try:
            wrote, result = await job(conn)
        except BaseException:
            with suppress(Exception):
                await conn.execute("ROLLBACK")
            raise
        mark = uuid.uuid4() if marked and wrote is not None else None
        # The mark is a literal (simple query protocol: the only way to send two statements
        # in one message); it is a UUID this process made, nothing from outside.
        commit = (
            "COMMIT"
            if mark is None
            else f"INSERT INTO {COMMIT_MARKS} (token) VALUES ('{mark}'); COMMIT"
        )
        sent = asyncio.get_running_loop().time()
        try:
            # Only the COMMIT is watched: a long transaction (a migration, a bulk action) is
            # not a held commit.
            if watch is None:
                await conn.execute(commit)
            else:
                with watch.pending():
                    await conn.execute(commit)
        except (*_TRANSIENT, *_CLIENT_ERRORS) as exc:
            raise _Ambiguous(mark, wrote is not None, result, sent) from exc
        except BaseException:
            # The server refused the mark (it did not commit): end the failed transaction.
            with suppress(Exception):
                await conn.execute("ROLLBACK")
            raise
        return result

    async def _committed(self, mark: uuid.UUID, sent: float) -> bool:
        """Whether the transaction that sent ``mark`` with its COMMIT committed, on the server
        that is the primary now. Inserting the same mark as a veto waits for a transaction
        still committing it (the unique key), finds its mark if it committed, and otherwise
        keeps it from ever committing: the answer cannot change afterwards. A veto already
        stored by an earlier try of this question (its answer lost too) says the same."""

        async def decide() -> bool:
            if asyncio.get_running_loop().time() - sent > _MARK_TRUSTED_S:
                # Its mark may have been deleted since: better an error than a guess.
                raise CommitUnknown("whether a write committed can no longer be told")
            async with self._connection() as conn:
                veto: bool = await conn.fetchval(_VETO, mark)
                return not veto

        try:
            return await self._retrying(decide)
        except CommitUnknown:
            raise
        except StorageUnavailable as exc:
            raise CommitUnknown(f"whether a write committed could not be told: {exc}") from exc

    async def forget_marks(self) -> int:
        """Delete commit marks too old to be looked for; how many went."""

        async def job(conn: Any) -> int:
            done = await conn.execute(
                f"DELETE FROM {COMMIT_MARKS} WHERE at < now() - make_interval(secs => $1)",
                float(MARKS_KEPT_S),
            )
            return int(done.split()[-1])

        # Deleting old marks twice is harmless: no mark of its own needed.
        return await self.write_reporting_xid(lambda conn: _reporting(job(conn)), marked=False)

    async def migrate(self) -> int:
        """Apply pending migrations in one transaction; concurrent starters wait their turn."""

        async def job(conn: Any) -> int:
            if self.portable:
                await conn.execute(MIGRATION_LOCK)
            else:
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

        if self.portable:
            await self.read(create_lock_table)
        # Safe to run twice, and it must run before the marks' table exists.
        return await self.write_reporting_xid(lambda conn: _reporting(job(conn)), marked=False)


async def _reporting(result: Awaitable[T]) -> tuple[bool, T]:
    return True, await result


class Listener:
    """A dedicated connection LISTENing on the wake channel, re-established when lost.

    ``on_wake`` runs on every notification but those whose payload is ``own_origin`` (the
    store's own creates, which woke it already), and after every (re)connection because
    notifications sent while disconnected are gone; the worker's polling covers the gap.
    """

    def __init__(
        self,
        dsn: str,
        on_wake: Callable[[], None],
        ping_every: float = 5.0,
        on_control: Callable[[str], None] | None = None,
        health: StoreHealth | None = None,
        own_origin: str | None = None,
    ) -> None:
        self._dsn = dsn
        self._own_origin = own_origin
        self._health = health
        self._on_wake = on_wake
        self._on_control = on_control
        self._ping_every = ping_every
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def _wake(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if not payload or payload != self._own_origin:
            self._on_wake()

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
                await conn.add_listener(CHANNEL, self._wake)
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
