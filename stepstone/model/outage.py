"""What a store raises when it cannot serve for a reason outside the request: its database is
unreachable, or its disk is full. The API answers them 503 and 507 (web/common/outage.py); the
store's account of an episode of them is ``stepstone.storage.outage.StoreHealth``."""

from __future__ import annotations


class StoreOutage(Exception):
    """The store cannot do what was asked, for a reason outside the request."""

    kind = "outage"


class StoreUnreachable(StoreOutage):
    """The database could not be reached (down, restarting, refusing connections)."""

    kind = "unreachable"


class StoreFull(StoreOutage):
    """The disk under the store is full: the write was not made (nothing acknowledged is lost)."""

    kind = "full"
