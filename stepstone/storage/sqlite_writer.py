"""SQLite writes: run inline on the caller's thread, acknowledge once durable.

A commit at ``synchronous=NORMAL`` in WAL mode costs tens of microseconds: it appends the
transaction's pages to the WAL file without fsync, and can never corrupt the database. Handing
each job to a writer thread and back would cost more than the commit itself, so every job runs
at once, in its own transaction, on the caller's thread.

Durability (``synchronous=FULL``) is then one ``fdatasync`` of the WAL file (``WalSyncer``). A
durable write's future resolves only after an fdatasync that began after its commit, and every
commit made meanwhile shares the next one: group commit across instances. Because the WAL is a
log, replayed after a power cut only up to its first missing frame, a later commit never
survives without the earlier ones; so a write that depends on one not yet durable (a claim of a
just-created instance, say) is lost with it or kept with it, never kept alone. What other
connections may see for the length of one fdatasync is a write not yet durable (the technique is
known as early lock release); nobody is told "done" before it is, a reader neither: the reads
front-ends make (``ops.queries``) answer after ``sync()``.

Not every write needs its own fsync. A claim or an attempt's start is worth recording, but losing
it in a power cut only means the work is claimed or attempted again; such jobs are submitted with
``durable=False`` and resolve at once.

A write refused because the disk is full (``SQLITE_FULL``, ``ENOSPC``) fails as ``StoreFull``
and begins an episode of the store's ``StoreHealth`` (logged once); it is rolled back whole, so
nothing acknowledged is lost. On a nearly full disk small writes still fit between refused
ones, so a commit ends the episode only once ``ROOM_TO_RESUME`` is free again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from stepstone.observability import metrics
from stepstone.storage.outage import StoreFull, StoreHealth

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
Acknowledge = Callable[[BaseException | None], None]
log = logging.getLogger("stepstone.storage")

_STOP = object()
EVENTUAL_SYNC_S = 0.01
_WAL_HEADER = 32
_FRAME_HEADER = 24
_SQLITE_FULL = 13
# About a checkpoint's worth (the WAL's preallocated size, 5 MB at the defaults): space freed.
ROOM_TO_RESUME = 4 << 20


def disk_full(exc: BaseException) -> StoreFull | None:
    """``exc`` as ``StoreFull`` if it says the disk is full, else None."""
    if isinstance(exc, StoreFull):
        return exc
    if isinstance(exc, sqlite3.Error):
        # The primary result code is the low byte; extended codes keep it.
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == _SQLITE_FULL:
            return StoreFull(f"the disk is full: {exc}")
    elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return StoreFull(f"the disk is full: {exc}")
    return None


class StorageSyncFailed(OSError):
    """The WAL could not be made durable; the store accepts no more writes.

    After a failed fsync the kernel may have dropped the dirty pages, so a later fsync that
    succeeds proves nothing: the only safe answer is to stop, as PostgreSQL does.
    """


def preallocate_wal(conn: sqlite3.Connection, wal_path: str) -> None:
    """Zero-fill the WAL file to the size it reaches between checkpoints.

    fdatasync after an append must also write the file's new size (its inode); after an
    overwrite it need not, and here that halves its cost (about 300 us to 150 us). So,
    as PostgreSQL zero-fills its WAL segments, the WAL file gets its room up front, and SQLite,
    which reuses the file from the start after each checkpoint, then only overwrites. SQLite
    reads frames only up to the first one whose salt and checksum do not match, which zeros
    never do; it leaves stale bytes beyond its last frame itself after every checkpoint.
    """
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    frames = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    wanted = _WAL_HEADER + int(frames * 1.25) * (_FRAME_HEADER + page_size)
    conn.execute("BEGIN IMMEDIATE")  # no other connection may append or truncate meanwhile
    try:
        current = start = os.path.getsize(wal_path)
        if current >= wanted:
            return
        with open(wal_path, "r+b") as wal:
            try:
                wal.seek(current)
                zeros = bytes(1 << 20)
                while current < wanted:
                    current += wal.write(zeros[: wanted - current])
                wal.flush()
                os.fsync(wal.fileno())
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                # A full disk must not stop the server from starting: it serves reads and
                # refuses writes (507) until space is freed. The room is only an optimisation.
                wal.truncate(start)
                log.warning("no room to preallocate %s (%s); going on without", wal_path, exc)
    finally:
        conn.execute("ROLLBACK")


class WalSyncer:
    """Makes inline commits durable by fdatasync-ing the WAL file.

    Lives on one event loop: ``committed`` and ``after_sync`` are called from it. Durable
    commits are counted, and a sync covers the count taken when it began. Which thread syncs
    is decided one turn of the loop after someone first waits: if a single commit is not yet
    synced and nothing else was committed in that turn, the loop syncs it itself, since
    handing it to a thread and being woken back through the loop costs more than the sync
    (about 180 us of CPU per round trip in a VM, measured). Otherwise a thread syncs them all
    while the loop goes on (group commit), and the commits made meanwhile share the next one.

    One pattern is worth starting early: a lone step result (a commit whose writer syncs on
    demand, ``early``) that is the only thing the next wait needs, as when one activation steps
    alone. Once a wait has found exactly that, the next such commit is handed to the thread at
    once, so its fdatasync runs while the loop returns the result to ``run()`` and records the
    next step's start; the wait then blocks on the thread directly, not through the loop, as an
    inline sync would block. Any other durable commit before that wait (an activation's end)
    turns this off again until a wait finds the pattern anew, so the commits a writer makes
    before it needs durability (a step's result, then the instance's end) still share a sync.
    The handoff costs CPU (about 75 us a step here, measured), so this is done only while
    fdatasyncs are slow (their moving average above ``EARLY_SYNC_MIN_S``, as on a contended
    disk): on a quiet disk the overlap saved less than that and steps got no faster.
    """

    EARLY_SYNC_MIN_S = 0.0005

    def __init__(self, wal_path: str) -> None:
        self._wal_path = wal_path
        self._fd: int | None = None
        self._inode: int | None = None
        self._committed = 0
        self._synced = 0
        self._commits_seen = 0
        self._seen_at_schedule = 0
        self._waiters: list[tuple[int, Acknowledge]] = []
        self._in_flight = False
        self._start_handle: asyncio.Handle | None = None
        self._eventual: asyncio.TimerHandle | None = None
        self.failure: BaseException | None = None
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Early syncs: whether the last wait found one lone early commit, whether the sync in
        # flight is such an early one, and the last durable commit's kind.
        self._eager = False
        self._early_in_flight = False
        self._sync_s = 0.0  # moving average of the fdatasync's duration
        self._last_early = False
        # The handoff to a loop blocked on the thread's sync: under _hand, whether the thread
        # has yet to report, and the event (and result) of a loop waiting for that report.
        self._hand = threading.Lock()
        self._thread_busy = False
        self._blocked: threading.Event | None = None
        self._blocked_result: tuple[int, BaseException | None] = (0, None)
        self._thread = threading.Thread(target=self._run, name="stepstone-wal-sync", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> bool:
        """Whether a durable commit is not known to be durable yet."""
        return self._synced < self._committed

    def committed(self, durable: bool = True, early: bool = False) -> None:
        """Count a commit just made.

        A durable one's sync starts once someone waits for it (``after_sync``), so that the
        commits a writer makes before it needs durability (a step's result, then the instance's
        end) share one; or at the latest ``EVENTUAL_SYNC_S`` later; or at once for an ``early``
        commit (its writer syncs on demand) when the pattern of lone step results holds (see
        the class). Any commit also tells that the loop has other work going on.
        """
        self._commits_seen += 1
        if not durable:
            return
        self._committed += 1
        self._last_early = early
        if self._early_in_flight:
            self._eager = False  # more than the lone result: back to syncing on demand
        elif (
            early
            and self._eager
            and not self._in_flight
            and self.failure is None
            and self._sync_s > self.EARLY_SYNC_MIN_S
        ):
            self._early_in_flight = True
            self._dispatch(asyncio.get_running_loop())
            return
        if self._eventual is None:
            self._eventual = asyncio.get_running_loop().call_later(EVENTUAL_SYNC_S, self._start)

    def after_sync(self, acknowledge: Acknowledge) -> None:
        """Call ``acknowledge`` once every durable commit made so far is durable."""
        if self.failure is not None:
            acknowledge(self.failure)
        elif not self.pending:
            acknowledge(None)
        else:
            self._waiters.append((self._committed, acknowledge))
            self._schedule_start()

    def _schedule_start(self) -> None:
        if self._start_handle is None and (not self._in_flight or self._early_in_flight):
            self._seen_at_schedule = self._commits_seen
            self._start_handle = asyncio.get_running_loop().call_soon(self._waited)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._in_flight = True
        with self._hand:
            self._thread_busy = True
        self._requests.put((loop, self._committed))

    def _waited(self) -> None:
        """``_start`` for a wait: learns whether the next lone step result syncs early."""
        if self._early_in_flight:
            self._start_handle = None
            self._await_early()
            return
        lone = self._committed - self._synced == 1 and self._last_early
        self._eager = lone and self._commits_seen == self._seen_at_schedule
        self._start()

    def _await_early(self) -> None:
        """Block on the early sync in flight, as an inline sync would block the loop; unless
        other commits came meanwhile (there is work to overlap: the thread reports through the
        loop) or the thread has reported already."""
        if self._commits_seen != self._seen_at_schedule:
            return
        with self._hand:
            event = None
            if self._thread_busy:
                event = self._blocked = threading.Event()
        if event is None:
            return
        event.wait()
        upto, error = self._blocked_result
        self._synced_up_to(asyncio.get_running_loop(), upto, error)

    def _start(self) -> None:
        self._start_handle = None
        if self._eventual is not None:
            self._eventual.cancel()
            self._eventual = None
        if self._in_flight or not self.pending or self.failure is not None:
            return
        loop = asyncio.get_running_loop()
        # Another commit in the meantime (a worker claiming the instance just created, other
        # activations stepping) means there is work to overlap with the sync.
        busy = self._commits_seen != self._seen_at_schedule
        if busy or self._committed - self._synced > 1:
            self._dispatch(loop)
            return
        upto, error = self._committed, None
        try:
            self.sync()
        except OSError as exc:
            error = exc
        self._synced_up_to(loop, upto, error)

    def _run(self) -> None:
        while (request := self._requests.get()) is not _STOP:
            loop, upto = request
            error: BaseException | None = None
            try:
                self.sync()
            except Exception as exc:  # any: a loop blocked on this thread must hear back
                error = exc
            with self._hand:
                self._thread_busy = False
                blocked, self._blocked = self._blocked, None
                if blocked is not None:  # the loop waits on this thread, not on its selector
                    self._blocked_result = (upto, error)
                    blocked.set()
                    continue
            try:
                loop.call_soon_threadsafe(self._synced_up_to, loop, upto, error)
            except RuntimeError:  # the loop closed while its writes were syncing
                log.debug("dropped a sync report for a closed event loop")

    def _synced_up_to(
        self, loop: asyncio.AbstractEventLoop, upto: int, error: BaseException | None
    ) -> None:
        self._in_flight = self._early_in_flight = False
        if error is not None:
            if self.failure is None:
                log.critical("fdatasync of %s failed; no more writes accepted", self._wal_path)
                failure = StorageSyncFailed(f"could not make {self._wal_path} durable: {error}")
                failure.__cause__ = error
                self.failure = failure
            waiters, self._waiters = self._waiters, []
            for _, acknowledge in waiters:
                acknowledge(self.failure)
            return
        self._synced = max(self._synced, upto)
        ready = [acknowledge for target, acknowledge in self._waiters if target <= upto]
        self._waiters = [(target, ack) for target, ack in self._waiters if target > upto]
        for acknowledge in ready:
            acknowledge(None)
        if self.pending:
            self._dispatch(loop)

    def sync(self) -> None:
        """fdatasync the WAL file (the one at its path now, should it have been replaced)."""
        inode = os.stat(self._wal_path).st_ino
        if self._fd is None or inode != self._inode:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = os.open(self._wal_path, os.O_RDONLY)
            self._inode = os.fstat(self._fd).st_ino
            # A new WAL file is durable only once its directory entry is.
            directory = os.open(os.path.dirname(self._wal_path) or ".", os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        started = time.perf_counter()
        os.fdatasync(self._fd)
        took = time.perf_counter() - started
        metrics.STORAGE_FSYNC_SECONDS.observe(took)
        self._sync_s += (took - self._sync_s) / 8

    def close(self) -> None:
        """Stop the thread; acknowledge what is still waiting after one last sync."""
        for handle in (self._start_handle, self._eventual):
            if handle is not None:
                handle.cancel()
        self._start_handle = self._eventual = None
        self._requests.put(_STOP)
        self._thread.join()
        error: BaseException | None = self.failure
        if error is None and self.pending:
            try:
                self.sync()
            except OSError as exc:
                error = exc
            else:
                self._synced = self._committed
        waiters, self._waiters = self._waiters, []
        for _, acknowledge in waiters:
            acknowledge(error)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(slots=True)
class _Entry:
    job: Job
    future: asyncio.Future[Any]
    durable: bool
    wait: bool
    wakes: bool
    result: Any = None
    error: Exception | None = None


def _settles(future: asyncio.Future[T], result: T) -> Acknowledge:
    def acknowledge(error: BaseException | None) -> None:
        if future.done():  # the caller stopped waiting; the commit stands
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    return acknowledge


class InlineWriter:
    """Runs write jobs on the event loop's thread: each at once in its own transaction, or
    batched with the others of one loop turn in a shared one.

    With a ``WalSyncer`` (``synchronous=FULL``), durable jobs resolve after the WAL is synced;
    without one (``NORMAL``, or in memory) they resolve at once.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        lock: threading.Lock | None = None,
        syncer: WalSyncer | None = None,
        health: StoreHealth | None = None,
    ) -> None:
        self._conn = conn
        self._lock = lock or threading.Lock()
        self._syncer = syncer
        self.health = health or StoreHealth("SQLite")
        # The main database's file ("" in memory), whose disk a full episode waits on.
        self._path: str = conn.execute("PRAGMA database_list").fetchone()[2] or ""
        self._after_commit: list[Callable[[], None]] = []
        self._batch: list[_Entry] = []
        # Whether the last commit changed any row: one that changed none wrote nothing to the
        # WAL, so it needs no sync of its own (an idle server's periodic sweeps and claims).
        self._changed = False

    def on_commit(self, callback: Callable[[], None]) -> None:
        """``callback`` runs after each acknowledged write submitted with ``wakes``."""
        self._after_commit.append(callback)

    def _run(self, job: Job) -> Any:
        if self._syncer is not None and self._syncer.failure is not None:
            raise self._syncer.failure
        conn = self._conn
        with self._lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                changes_before = conn.total_changes
                try:
                    result = job(conn)
                    self._changed = conn.total_changes != changes_before
                    started = time.perf_counter()
                    conn.execute("COMMIT")
                    metrics.SQLITE_COMMIT.observe(time.perf_counter() - started)
                except BaseException:
                    # SQLite may have rolled back already (a full disk, mid-statement or at
                    # COMMIT); a ROLLBACK then would only hide why.
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as exc:
                full = self._full(exc)
                if full is None:
                    raise
                raise full from exc
        if self.health.failing is not None and self._room():
            self.health.recovered()
        return result

    def _room(self) -> bool:
        if not self._path:
            return True
        stats = os.statvfs(os.path.dirname(self._path) or ".")
        return stats.f_bavail * stats.f_frsize >= ROOM_TO_RESUME

    def _full(self, exc: BaseException) -> StoreFull | None:
        """``exc`` as ``StoreFull`` (noted in the health) if the disk is full, else None."""
        full = disk_full(exc)
        if full is not None:
            self.health.failed(full)
        return full

    def submit(
        self,
        job: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = True,
        wait: bool = True,
        wakes: bool = False,
        batched: bool = False,
    ) -> asyncio.Future[T]:
        """Run ``job`` now; the future resolves with its result once the commit is durable.

        ``wait=False`` resolves it at the commit while the sync goes on: for a writer that
        calls ``sync()`` before anything outside the database depends on the write. ``wakes``
        marks a write that may make work runnable: the ``on_commit`` callbacks run at once,
        since a worker acting on it syncs before running user code anyway. ``batched`` runs
        the job once the loop has run what is ready, in one transaction with the other batched
        jobs of that turn (each in its own savepoint, so each still fails alone): many clients
        creating at once, or many activations ending, then share a commit.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        entry = _Entry(job, future, durable, wait, wakes)
        if batched:
            self._batch.append(entry)
            if len(self._batch) == 1:
                loop.call_soon(self._run_batch)
            return future
        try:
            entry.result = self._run(job)
        except Exception as exc:  # handed to the caller, as an awaited write would raise
            future.set_exception(exc)
            return future
        self._committed([entry])
        return future

    def _run_batch(self) -> None:
        batch, self._batch = self._batch, []
        metrics.SQLITE_BATCH.observe(len(batch))
        if not batch:
            return

        def each_in_a_savepoint(conn: sqlite3.Connection) -> None:
            for entry in batch:
                conn.execute("SAVEPOINT batched")
                try:
                    entry.result = entry.job(conn)
                except Exception as exc:
                    if not conn.in_transaction:
                        raise  # SQLite rolled all of it back (a full disk): every entry fails
                    conn.execute("ROLLBACK TO batched")
                    full = self._full(exc)
                    entry.error = exc if full is None else full
                conn.execute("RELEASE batched")

        try:
            if len(batch) == 1:
                batch[0].result = self._run(batch[0].job)
            else:
                self._run(each_in_a_savepoint)
        except Exception as exc:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            return
        for entry in batch:
            if entry.error is not None and not entry.future.done():
                entry.future.set_exception(entry.error)
        self._committed([entry for entry in batch if entry.error is None])

    def _committed(self, entries: list[_Entry]) -> None:
        """Count the commit holding ``entries``, wake, and settle their futures."""
        syncer = self._syncer
        if syncer is not None and entries:
            # A commit that changed nothing is still acknowledged only once what it may have
            # read is durable (after_sync below), but adds no sync of its own.
            durable = [e for e in entries if e.durable]
            early = bool(durable) and not any(e.wait for e in durable)
            syncer.committed(self._changed and bool(durable), early)
        if any(e.wakes for e in entries):
            for callback in self._after_commit:
                callback()
        for e in entries:
            if not e.wait or not e.durable or syncer is None:
                if not e.future.done():
                    e.future.set_result(e.result)
            else:
                syncer.after_sync(_settles(e.future, e.result))

    def sync(self) -> asyncio.Future[None] | None:
        """A future for "every durable commit so far is durable", or None if that is so now."""
        syncer = self._syncer
        if syncer is None or (syncer.failure is None and not syncer.pending):
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        syncer.after_sync(_settles(future, None))
        return future

    def close(self) -> None:
        self._run_batch()
        if self._syncer is not None:
            self._syncer.close()
