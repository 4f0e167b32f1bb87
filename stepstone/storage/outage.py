"""When the store cannot serve: its database is unreachable, or its disk is full.

Either is an *episode*: it begins with the first failure, which is logged once (a warning
naming the cause), and ends with the next success (logged at info, with how long it lasted). The
failures in between are what retries and clients meet; logging each of them would bury the
one line that matters under a traceback per attempt.

``StoreHealth`` is the store's own account of this, read by ``/readyz`` and by the API, which
answers 503 (unreachable) or 507 (full) instead of hanging or answering a generic 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# The errors are vocabulary (model/outage.py): the web layer answers them without the store.
from stepstone.model.outage import StoreFull, StoreOutage, StoreUnreachable

__all__ = ["StoreFull", "StoreHealth", "StoreOutage", "StoreUnreachable", "health_of"]

log = logging.getLogger("stepstone.storage")


class StoreHealth:
    """Whether the store is in an outage episode, and since when (``time.monotonic``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failing: StoreOutage | None = None
        self.since: float | None = None
        self.episodes = 0
        self._listeners: list[Callable[[StoreOutage], None]] = []

    def add_listener(self, callback: Callable[[StoreOutage], None]) -> None:
        """``callback(outage)`` runs when an episode begins (on the thread that noticed it)."""
        self._listeners.append(callback)

    def failed(self, outage: StoreOutage) -> None:
        """Note a failure; only the first of an episode is logged."""
        current = self.failing
        if current is not None and current.kind == outage.kind:
            return
        self.failing = outage
        self.since = time.monotonic()
        self.episodes += 1
        log.warning(
            "%s: %s (%s); further failures are not logged until it recovers",
            self.name,
            _BEGINS[outage.kind],
            outage,
        )
        for callback in self._listeners:
            callback(outage)

    def recovered(self) -> None:
        """Note a success; ends the episode, if one is under way."""
        if self.failing is None:
            return
        lasted = time.monotonic() - (self.since or 0.0)
        kind, self.failing, self.since = self.failing.kind, None, None
        # Info: the episode's one warning was its beginning.
        log.info("%s: %s after %.1fs", self.name, _ENDS[kind], lasted)


_BEGINS = {
    "unreachable": "the database is unreachable",
    "full": "the disk is full; writes are refused",
    "outage": "the store cannot serve",
}
_ENDS = {
    "unreachable": "the database is reachable again",
    "full": "writes are accepted again",
    "outage": "the store serves again",
}


def health_of(storage: object) -> StoreHealth | None:
    """The health of ``storage``, for stores that keep one."""
    health = getattr(storage, "health", None)
    return health if isinstance(health, StoreHealth) else None
