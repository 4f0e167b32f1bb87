"""Step attempt timeouts with one timer per event loop instead of one per attempt.

``asyncio.timeout`` arms a timer for every attempt and cancels it when the attempt ends,
nearly always long before it is due (the default step timeout is 10 minutes): a TimerHandle,
a push onto the loop's heap, and a cancelled entry left in it, about a tenth of a quick step's
CPU. Here an attempt only notes its deadline. The loop's one timer is armed for the earliest
deadline known when it was set; when it fires it cancels the attempts now due and is armed
again for the earliest left, so a timer is set only when a deadline comes before the armed one.

An attempt cut short is cancelled and sees ``TimeoutError``, as with ``asyncio.timeout``
(whose cancel-count bookkeeping ``AttemptDeadline`` follows, so that a cancellation from
elsewhere stays a cancellation).
"""

from __future__ import annotations

import asyncio
import weakref
from types import TracebackType


class _Deadlines:
    """The armed deadlines of one loop, and its one timer."""

    __slots__ = ("__weakref__", "_loop", "_scopes", "_timer", "_timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._scopes: set[AttemptDeadline] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def add(self, scope: AttemptDeadline) -> None:
        self._scopes.add(scope)
        if self._timer is None or scope.when < self._timer_at:
            self._arm(scope.when)

    def discard(self, scope: AttemptDeadline) -> None:
        # The timer stays: when it fires with nothing due, it only re-arms (or not).
        self._scopes.discard(scope)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        earliest: float | None = None
        for scope in list(self._scopes):
            if scope.when <= now:
                self._scopes.discard(scope)
                scope.expire()
            elif earliest is None or scope.when < earliest:
                earliest = scope.when
        if earliest is not None:
            self._arm(earliest)


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = (
    weakref.WeakKeyDictionary()
)


class AttemptDeadline:
    """``async with AttemptDeadline(seconds)``: the body is cancelled once ``seconds`` have
    passed, and ``TimeoutError`` raised in its place; ``expired()`` tells whether it was."""

    __slots__ = ("_cancelling", "_deadlines", "_delay", "_expired", "_task", "when")

    def __init__(self, delay_s: float) -> None:
        self._delay = delay_s
        self._expired = False
        self.when = 0.0

    async def __aenter__(self) -> AttemptDeadline:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("AttemptDeadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self.when = loop.time() + self._delay
        deadlines = _by_loop.get(loop)
        if deadlines is None:
            deadlines = _by_loop[loop] = _Deadlines(loop)
        self._deadlines = deadlines
        deadlines.add(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._deadlines.discard(self)
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    def expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def expired(self) -> bool:
        return self._expired
