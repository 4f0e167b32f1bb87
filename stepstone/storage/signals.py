"""A store's in-process listeners: wake-ups, status changes and stops (``storage/base.py`` says
what each announces), one copy for every store.

Each store fires them right after the commit that causes them; PostgreSQL's ``Listener`` also
fires them for other processes' commits, which is why a store may override the ``add_*``
methods (to start listening once someone listens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class Signals:
    """Mixed into every store; ``_init_signals`` before any listener is added."""

    _wake_listeners: list[Callable[[], None]]
    _change_listeners: list[Callable[[], None]]
    _control_listeners: list[Callable[[int, int | None], None]]

    def _init_signals(self) -> None:
        self._wake_listeners = []
        self._change_listeners = []
        self._control_listeners = []

    def add_wake_listener(self, callback: Any) -> None:
        self._wake_listeners.append(callback)

    def add_change_listener(self, callback: Any) -> None:
        self._change_listeners.append(callback)

    def add_control_listener(self, callback: Any) -> None:
        self._control_listeners.append(callback)

    def _fire_wake(self) -> None:
        # A wake is a change too: whoever waits for a status hears of it.
        for callback in (*self._wake_listeners, *self._change_listeners):
            callback()

    def _fire_change(self) -> None:
        for callback in self._change_listeners:
            callback()

    def _fire_control(self, stops: Sequence[tuple[int, int | None]]) -> None:
        for pk, epoch in stops:
            for callback in self._control_listeners:
                callback(pk, epoch)
