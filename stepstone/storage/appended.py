"""A per-instance "new events" signal: what an event-stream subscriber waits on between reads.

In the process that wrote them, a store fires ``AppendSignal.fire(instance_pk)`` right after the
commit that appended events to that instance's log (a step's progress, an activation's end,
an operator's action, a consumed event). When nobody watches, that is one dict lookup.

Another process may write too: workers beside the API server on one PostgreSQL database, or a
second process on one SQLite file. For those, a single fallback poller per store reads, every
``FALLBACK_SECONDS``, the newest event id of every watched instance in one query, and wakes the
watchers that have not seen it (or whose instance is gone). A NOTIFY carrying the pk would
tell other processes sooner, but it lands on the write path of every step: measured on a
record_progress-shaped transaction here, 737 -> 893 us (median of 30 interleaved rounds, one
listener), and PostgreSQL serializes the commits of all notifying transactions on one lock.
The poll costs one indexed read a round, however many subscribers, and nothing on writes.

A watcher takes its ``Watch`` before its first read and calls ``arm()`` before each read, so a
commit between a read and the wait is never missed: its fire marks the watch, and the wait
returns at once. Spurious wake-ups (a write rolled back, a poll racing a read) only cost a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence

log = logging.getLogger("stepstone.storage")

# How soon a subscriber sees events written by another process, or a delete: as soon as the
# 200 ms per-subscriber poll it replaced, at one read per server whatever the subscribers.
FALLBACK_SECONDS = 0.25
Latest = Callable[[Sequence[int]], Awaitable[Mapping[int, int]]]


class Watch:
    """One watcher's registration for one instance's new events."""

    __slots__ = ("_fired", "_future", "_loop", "after", "pk")

    def __init__(self, pk: int, loop: asyncio.AbstractEventLoop) -> None:
        self.pk = pk
        # The newest event id the watcher has read; -1 until it waits (any poll wakes it).
        self.after = -1
        self._loop = loop
        self._fired = False
        self._future: asyncio.Future[None] | None = None

    @property
    def waiting(self) -> bool:
        return self._future is not None

    def arm(self) -> None:
        """Forget earlier fires: call before reading what they announced."""
        self._fired = False

    async def wait(self, after: int, timeout: float) -> bool:
        """Wait until a fire since the last ``arm()`` or ``timeout`` seconds; True if fired.

        ``after`` is the newest event id read so far (the fallback poll compares with it).
        """
        self.after = after
        if self._fired:
            return True
        future = self._future = self._loop.create_future()
        # A timer that resolves the future, not asyncio.timeout: a thousand idle watchers
        # time out every heartbeat, and a cancellation costs far more than a callback.
        timer = self._loop.call_later(timeout, _expire, future)
        try:
            await future
        finally:
            timer.cancel()
            self._future = None
        return self._fired

    def fire(self) -> None:
        """Mark the watch (from any thread)."""
        try:
            here = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            here = False
        if here:
            self._set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        self._fired = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AppendSignal:
    """The watches of one store, by instance pk, and the fallback poller serving them.

    ``latest(pks)`` answers ``{pk: newest event id}`` (0 for an empty log) for those of
    ``pks`` that still exist.
    """

    def __init__(self, latest: Latest, fallback_seconds: float = FALLBACK_SECONDS) -> None:
        self._watches: dict[int, set[Watch]] = {}
        self._latest = latest
        self.fallback_seconds = fallback_seconds
        self._poller: asyncio.Task[None] | None = None
        # Rounds of the fallback poll so far (each one read, whatever the number of watches).
        self.polls = 0
        self._polled: asyncio.Event | None = None

    @property
    def active(self) -> bool:
        """Whether anyone watches (writers skip collecting pks when not)."""
        return bool(self._watches)

    def parked(self) -> int:
        """How many watchers are waiting now."""
        return sum(w.waiting for watches in self._watches.values() for w in watches)

    def fire(self, pk: int) -> None:
        """New events were committed for instance ``pk``."""
        watches = self._watches.get(pk)
        if watches:
            for watch in tuple(watches):
                watch.fire()

    def fire_many(self, pks: Iterable[int]) -> None:
        if self._watches:
            for pk in pks:
                self.fire(pk)

    @contextlib.contextmanager
    def watching(self, pk: int) -> Iterator[Watch]:
        """A watch of ``pk`` for the length of the block (on the running loop)."""
        loop = asyncio.get_running_loop()
        watch = Watch(pk, loop)
        self._watches.setdefault(pk, set()).add(watch)
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._poll(), name="stepstone-append-poll")
        try:
            yield watch
        finally:
            watches = self._watches.get(pk)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[pk]
            if not self._watches and self._poller is not None:
                self._poller.cancel()
                self._poller = None

    def stop(self) -> None:
        """Cancel the poller (the store is closing); watches made later start it again."""
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def next_poll(self) -> None:
        """Return after the next round of the fallback poll (for tests and benchmarks)."""
        if self._polled is None:
            self._polled = asyncio.Event()
        await self._polled.wait()

    async def _poll(self) -> None:
        while self._watches:
            await asyncio.sleep(self.fallback_seconds)
            pks = list(self._watches)
            if not pks:
                break
            try:
                latest = await self._latest(pks)
            except Exception as exc:  # an outage: the watchers' own reads will say so
                log.debug("fallback poll of watched instances failed: %r", exc)
                continue
            self.polls += 1
            for pk in pks:
                newest = latest.get(pk)
                for watch in tuple(self._watches.get(pk, ())):
                    if newest is None or newest > watch.after:
                        watch.fire()
            polled, self._polled = self._polled, None
            if polled is not None:
                polled.set()
