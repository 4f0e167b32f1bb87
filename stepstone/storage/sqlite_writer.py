"""Group commit for SQLite: one writer thread, one transaction for everything queued.

Concurrent writers (many instances completing steps at once, API calls) hand small jobs to a
queue. The writer thread takes all queued jobs, runs each inside its own SAVEPOINT so one
job's failure does not undo the others, commits once, and only then resolves each job's future.
So the fsync of one commit is shared by every write in it, and no caller is told "done" before
its write is durable.

Not every write needs its own fsync. A claim or an attempt's start is worth recording, but
losing it in a power cut only means the work is claimed or attempted again; such jobs are
submitted with ``durable=False``. A batch made only of those commits at ``synchronous=NORMAL``
(in WAL mode: no fsync, no risk of corruption), and the next durable commit flushes it along
with its own pages.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
log = logging.getLogger("stepstone.storage")

_STOP = object()
LINGER_S = 0.001


class GroupCommitWriter:
    def __init__(
        self,
        conn: sqlite3.Connection,
        lock: threading.Lock | None = None,
        synchronous: str = "NORMAL",
    ) -> None:
        self._conn = conn
        self._synchronous = synchronous
        self._current_sync = synchronous
        # The in-memory store shares its only connection with readers under this lock.
        self._lock = lock
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="stepstone-writer", daemon=True)
        self._after_commit: list[Callable[[], None]] = []
        self._thread.start()

    def on_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    def submit(
        self,
        job: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = True,
        wakes: bool = False,
    ) -> asyncio.Future[T]:
        """Queue ``job``; the future resolves with its result after the commit holding it.

        ``wakes`` marks a write that may make work runnable: the commit then calls the
        ``on_commit`` callbacks.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((job, future, loop, durable, wakes))
        return future

    def submit_detached(self, job: Job, on_error: Callable[[BaseException], None]) -> None:
        """Queue a non-durable ``job`` without waiting; ``on_error`` runs in the writer thread."""
        self._queue.put((job, None, on_error, False, False))

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = self._drain(batch)
            if not stop and all(item[1] is None for item in batch):
                # Only detached writes (an attempt's start): the awaited write that usually
                # follows within a moment can share their commit.
                try:
                    item = self._queue.get(timeout=LINGER_S)
                except queue.Empty:
                    pass
                else:
                    stop = item is _STOP or self._drain(batch, item)
            if self._lock is not None:
                with self._lock:
                    outcomes = self._commit(batch)
            else:
                outcomes = self._commit(batch)
            self._deliver(batch, outcomes)
            if stop:
                return

    def _drain(self, batch: list[Any], first: Any = None) -> bool:
        """Move everything queued into ``batch``; True if a stop was requested."""
        if first is not None:
            batch.append(first)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            batch.append(item)

    def _commit(self, batch: list[Any]) -> list[tuple[bool, Any]]:
        conn = self._conn
        outcomes: list[tuple[bool, Any]] = []
        wanted = self._synchronous
        if wanted in ("FULL", "EXTRA") and not any(item[3] for item in batch):
            wanted = "NORMAL"
        if wanted != self._current_sync:
            conn.execute(f"PRAGMA synchronous = {wanted}")
            self._current_sync = wanted
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(False, exc)] * len(batch)
        for job, *_ in batch:
            conn.execute("SAVEPOINT job")
            try:
                result = job(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((False, exc))
            else:
                conn.execute("RELEASE job")
                outcomes.append((True, result))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            return [(False, exc)] * len(batch)
        return outcomes

    def _deliver(self, batch: list[Any], outcomes: list[tuple[bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        wake = False
        for (_, future, target, _, wakes), (ok, value) in zip(batch, outcomes, strict=True):
            wake = wake or (ok and wakes)
            if future is None:
                if not ok:
                    target(value)
                continue
            by_loop.setdefault(target, []).append((future, ok, value))
        for loop, results in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve_all, results)
            except RuntimeError:  # the loop closed while its writes were committing
                log.debug("dropped %d results for a closed event loop", len(results))
        if wake:
            for callback in self._after_commit:
                callback()


def _resolve_all(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class InlineWriter:
    """The same interface without the thread, for stores whose commit does not fsync.

    An in-memory database, or a file at ``synchronous=NORMAL``, commits in tens of
    microseconds: less than handing the job to another thread and back. Jobs run at once on
    the caller's thread. Detached jobs (an attempt's start) wait up to ``LINGER_S`` for the next
    awaited job and share its transaction, as they share a commit in the threaded writer.
    """

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock | None = None) -> None:
        self._conn = conn
        self._lock = lock or threading.Lock()
        self._after_commit: list[Callable[[], None]] = []
        self._detached: list[tuple[Job, Callable[[BaseException], None]]] = []
        self._flush_timer: asyncio.TimerHandle | None = None

    def on_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    def _run(self, job: Job | None) -> Any:
        """Run the detached jobs waiting, then ``job``, in one transaction."""
        detached, self._detached = self._detached, []
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        conn = self._conn
        failed: list[tuple[Callable[[BaseException], None], BaseException]] = []
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for waiting, on_error in detached:
                    conn.execute("SAVEPOINT detached")
                    try:
                        waiting(conn)
                    except Exception as exc:
                        conn.execute("ROLLBACK TO detached")
                        failed.append((on_error, exc))
                    conn.execute("RELEASE detached")
                result = job(conn) if job is not None else None
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        for on_error, error in failed:
            on_error(error)
        return result

    def submit(
        self,
        job: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = True,
        wakes: bool = False,
    ) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self._run(job))
        except Exception as exc:  # handed to the caller, as the threaded writer does
            future.set_exception(exc)
            return future
        if wakes:
            for callback in self._after_commit:
                callback()
        return future

    def submit_detached(self, job: Job, on_error: Callable[[BaseException], None]) -> None:
        self._detached.append((job, on_error))
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(LINGER_S, self.flush)

    def flush(self) -> None:
        """Commit the detached jobs still waiting."""
        self._flush_timer = None
        if self._detached:
            self._run(None)

    def close(self) -> None:
        self.flush()
