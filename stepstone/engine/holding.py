"""How the replay step's own store calls fail: as the activation's writes do."""

from __future__ import annotations

from types import TracebackType

from stepstone.engine.signals import LeaseLost, StoreLost
from stepstone.model.outage import StoreOutage
from stepstone.storage.base import Fenced


class _Holding:
    """A class rather than a ``contextlib.contextmanager``: entered twice a step, where a
    generator-based one costs a generator and three calls each time."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, Fenced):
            raise LeaseLost() from None
        if isinstance(exc, StoreOutage):
            raise StoreLost(str(exc)) from exc


_HOLDING = _Holding()


def holding() -> _Holding:
    """A lost claim or a store outage ends the activation, never reaching workflow code as a
    step error (neither is the workflow's failure)."""
    return _HOLDING
