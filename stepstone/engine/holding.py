"""How the replay step's own store calls fail: as the activation's writes do."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from stepstone.engine.signals import LeaseLost, StoreLost
from stepstone.storage.base import Fenced
from stepstone.storage.outage import StoreOutage


@contextlib.contextmanager
def holding() -> Iterator[None]:
    """A lost claim or a store outage ends the activation, never reaching workflow code as a
    step error (neither is the workflow's failure)."""
    try:
        yield
    except Fenced:
        raise LeaseLost() from None
    except StoreOutage as outage:
        raise StoreLost(str(outage)) from outage
