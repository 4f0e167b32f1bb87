"""PostgreSQL behind a failover: connection strings naming several hosts, and commits that a
synchronous standby holds back.

A URL may list several hosts, as libpq and asyncpg read them:
``postgresql://user@h1:5432,h2:5433/db?target_session_attrs=read-write``. Every connection
(the pool's, the lease connection, the listener) is made by trying the hosts in order and
keeping the first that accepts writes, so after a failover a lost connection is simply made
again, on the new primary. Stepstone always writes, so a list of hosts without
``target_session_attrs`` means ``read-write`` here (libpq's default, ``any``, would settle on
whichever answers first, a standby included); ``any`` may still be asked for explicitly, for
databases where every node takes writes (CockroachDB, YugabyteDB).

With ``synchronous_standby_names`` set, a COMMIT returns only once a standby has its WAL. If
that standby is gone or cut off, and the policy says to wait for it, every commit waits: the
database is reachable, answers reads, and yet no write completes. ``CommitWatch`` turns that
into an outage the API can answer (503, ``/readyz`` not ready) instead of requests that hang:
once a COMMIT (or a one-statement write, whose commit is part of it) has waited ``STALL_S``
without an answer, the store's health is failing until a write completes again.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from urllib.parse import parse_qs

from stepstone.storage.outage import StoreHealth, StoreUnreachable

# Longer than any healthy statement, even on a loaded machine (a step's write is one
# statement); short enough that a client waiting for an answer hears 503 within seconds.
STALL_S = 5.0

_SESSION_ATTRS = ("read-write", "primary", "any")
_NOT_WRITABLE = ("standby", "prefer-standby", "read-only")


class InvalidPostgresURL(ValueError):
    """A PostgreSQL URL that cannot be used; the message names what is wrong."""


class CommitsStalled(StoreUnreachable):
    """Writes reach the database but their commits are not confirmed (a synchronous standby
    that is down or cut off, with a policy that waits for it)."""


def _split_host(url: str, spec: str) -> tuple[str, int | None]:
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if not host:
        raise InvalidPostgresURL(f"{url!r}: a host in the list is empty")
    if not port:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidPostgresURL(f"{url!r}: port {port!r} of host {host!r} is not a port number")
    return host, int(port)


def postgres_hosts(url: str) -> list[tuple[str, int | None]]:
    """The hosts a PostgreSQL URL names, in the order connections try them."""
    rest = url.split("://", 1)[1]
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    hostlist = netloc.rpartition("@")[2]
    if not hostlist:
        return []
    return [_split_host(url, spec) for spec in hostlist.split(",")]


def postgres_dsn(url: str) -> str:
    """Check a PostgreSQL URL and return the DSN to connect with.

    A list of several hosts gets ``target_session_attrs=read-write`` unless it says otherwise,
    so that connections find the primary.
    """
    hosts = postgres_hosts(url)
    query = url.partition("?")[2]
    asked = parse_qs(query).get("target_session_attrs")
    if asked is not None:
        value = asked[-1]
        if value in _NOT_WRITABLE:
            raise InvalidPostgresURL(
                f"{url!r}: target_session_attrs={value} would connect to a server that cannot"
                " take writes; Stepstone writes, use read-write (or primary)"
            )
        if value not in _SESSION_ATTRS:
            raise InvalidPostgresURL(
                f"{url!r}: target_session_attrs must be one of {', '.join(_SESSION_ATTRS)},"
                f" not {value!r}"
            )
        return url
    if len(hosts) < 2:
        return url
    return f"{url}{'&' if query else '?'}target_session_attrs=read-write"


class CommitWatch:
    """Writes in flight on one store's connections, and whether one has waited too long."""

    def __init__(self, health: StoreHealth, stall_after: float = STALL_S) -> None:
        self._health = health
        self._stall_after = stall_after
        self._started: dict[int, float] = {}  # loop time each write in flight began
        self._next = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stalled = False
        # A write that commits nothing but still waits like any commit (it takes a
        # transaction id); run while stalled and no other write is left to prove otherwise.
        self.probe: Callable[[], Awaitable[object]] | None = None
        self._probing: asyncio.Task[None] | None = None

    @contextmanager
    def pending(self) -> Iterator[None]:
        """Around a write that holds a connection, until its answer (its COMMIT's) arrives."""
        loop = asyncio.get_running_loop()
        key, self._next = self._next, self._next + 1
        self._started[key] = loop.time()
        # A store reopened on another loop (tests) leaves its old timer behind, never to run.
        if self._timer is None or self._loop is not loop:
            self._loop = loop
            self._timer = loop.call_later(self._stall_after, self._check)
        try:
            yield
        except BaseException:
            del self._started[key]
            # Gave up or was cancelled (a request the API cut short): proves nothing about
            # commits, and reads succeed either way, so a probe finds out.
            if self.stalled and not self._started:
                self._start_probing()
            raise
        del self._started[key]
        if self.stalled and not self._overdue(loop.time()):
            self.stalled = False
            self._health.recovered()

    def _start_probing(self) -> None:
        if self.probe is None or (self._probing is not None and not self._probing.done()):
            return
        self._probing = asyncio.get_running_loop().create_task(
            self._probe_while_stalled(), name="stepstone-commit-probe"
        )

    async def _probe_while_stalled(self) -> None:
        while self.stalled and self.probe is not None:
            with suppress(Exception):  # the store's retries and health account for failures
                await self.probe()

    async def stop_probing(self) -> None:
        task, self._probing = self._probing, None
        if task is not None and not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    def _overdue(self, now: float) -> bool:
        return any(now - began >= self._stall_after for began in self._started.values())

    def _check(self) -> None:
        self._timer = None
        if not self._started:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        oldest = min(self._started.values())
        if now - oldest >= self._stall_after:
            if not self.stalled:
                self.stalled = True
                self._health.failed(
                    CommitsStalled(
                        f"a write has waited over {self._stall_after:.0f}s for its commit to be"
                        " confirmed (is a synchronous standby down or cut off?)"
                    )
                )
            delay = self._stall_after / 4
        else:
            delay = oldest + self._stall_after - now
        self._timer = loop.call_later(delay, self._check)


_WATCHES: weakref.WeakKeyDictionary[StoreHealth, CommitWatch] = weakref.WeakKeyDictionary()


def commit_watch(health: StoreHealth) -> CommitWatch:
    """The one watch of a store's health: its pool and its lease connection share it, so a
    read that succeeds on one cannot end an episode that writes on the other are still in."""
    watch = _WATCHES.get(health)
    if watch is None:
        watch = _WATCHES[health] = CommitWatch(health)
    return watch
