"""Slowing whoever guesses tokens: per client address, in memory, bounded.

Each wrong token (an API credential or the dashboard's sign-in) from an address counts a
failure. The first few are answered at once (a typo costs nothing); after that each answer is
held back by a delay that doubles with every further failure, and past ``lock_after`` failures
the address is refused with 429 and ``Retry-After`` without its token even being looked at, so
a locked-out address cannot learn that a guess was right. A correct token resets its address.

The delay is an ``asyncio.sleep`` on the failing request only: it holds no thread, and a
request from any other address (or a correct token from this one before it is locked) is not
touched. IPv6 clients count per /64, the block one host usually holds. The API's Guard and the
dashboard's sign-in share one throttle per ``Operations`` (an engine has one), so guesses
through either count together.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from stepstone.ops import Queries


@dataclass(frozen=True, slots=True)
class Policy:
    """How hard the throttle presses.

    Attributes:
        free_failures: failures answered without delay.
        first_delay: seconds the first delayed failure waits; each later one doubles it.
        max_delay: the longest a failure's answer waits.
        lock_after: failures after which the address gets 429 until ``lock_seconds`` pass.
        lock_seconds: how long a lock lasts; each failure after it locks again.
        forget_after: seconds without a failure after which the address starts afresh.
        max_clients: addresses remembered; the least recently failing go first.
    """

    free_failures: int = 5
    first_delay: float = 0.1
    max_delay: float = 2.0
    lock_after: int = 10
    lock_seconds: float = 60.0
    forget_after: float = 900.0
    max_clients: int = 10_000


@dataclass(slots=True)
class _Client:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class Throttle:
    def __init__(
        self,
        policy: Policy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy or Policy()
        self.clock = clock
        self.sleep = sleep
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def failures(self, address: str) -> int:
        client = self._live(client_key(address))
        return 0 if client is None else client.failures

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until ``address`` may try again, None if it may now."""
        if not self._clients:
            return None
        client = self._live(client_key(address))
        if client is None:
            return None
        left = client.locked_until - self.clock()
        return math.ceil(left) if left > 0 else None

    def failed(self, address: str) -> float:
        """Count a wrong token; the seconds its answer should wait."""
        key = client_key(address)
        now = self.clock()
        client = self._live(key) or _Client()
        client.failures += 1
        client.last = now
        policy = self.policy
        if client.failures >= policy.lock_after:
            client.locked_until = now + policy.lock_seconds
        self._clients[key] = client
        self._clients.move_to_end(key)
        while len(self._clients) > policy.max_clients:
            self._clients.popitem(last=False)
        over = client.failures - policy.free_failures
        if over <= 0:
            return 0.0
        return float(min(policy.max_delay, policy.first_delay * 2 ** min(over - 1, 60)))

    async def fail(self, address: str) -> None:
        """Count a wrong token and hold its answer back as long as the policy says."""
        delay = self.failed(address)
        if delay > 0:
            await self.sleep(delay)

    def succeeded(self, address: str) -> None:
        if self._clients:
            self._clients.pop(client_key(address), None)

    def _live(self, key: str) -> _Client | None:
        client = self._clients.get(key)
        if client is None:
            return None
        now = self.clock()
        if now - client.last > self.policy.forget_after and now >= client.locked_until:
            del self._clients[key]
            return None
        return client


def client_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


_shared: weakref.WeakKeyDictionary[Queries, Throttle] = weakref.WeakKeyDictionary()


def for_ops(ops: Queries) -> Throttle:
    """The throttle every front-end over these operations uses."""
    throttle = _shared.get(ops)
    if throttle is None:
        throttle = _shared[ops] = Throttle()
    return throttle
