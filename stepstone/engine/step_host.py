"""What the step API needs from the activation it runs in.

The step object (``replay.ReplayStep``) and the modules it hands work to see the activation
through this protocol only, so that ``activation`` can build its step without the two modules
importing each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

if TYPE_CHECKING:
    import asyncio

    from stepstone.model import history as h
    from stepstone.storage.base import Claim, DeliveredEvent, NewEvent, Storage


class StepHost(Protocol):
    storage: Storage
    claim: Claim
    workflow_name: str
    step_limit: int
    # Cloudflare's python_workflows_implicit_dependencies flag: it picks step.do's signature.
    implicit_dependencies: bool
    history: h.InstanceHistory
    # Recorded steps the code has not asked for again in this activation.
    unrequested: set[tuple[str, str]]
    # Replaying only to learn which rollbacks were registered: nothing new may run.
    replay_only: bool
    # Calls of the step API doing work now; a parked call does not count.
    executing: int

    @property
    def holds_new_steps(self) -> bool:
        """A pause or a shutdown is pending: no new step may start."""
        ...

    def now(self) -> int: ...

    def event(
        self,
        kind: str,
        data: dict[str, Any],
        key: tuple[str, str] | None,
        ts: int | None = None,
    ) -> NewEvent: ...

    def next_order(self) -> int:
        """The start order of a step started in this activation (after every recorded one)."""
        ...

    async def write(self, events: Sequence[NewEvent]) -> None: ...

    def write_nowait(self, events: Sequence[NewEvent]) -> None: ...

    def hold(self, events: Sequence[NewEvent]) -> None:
        """Record a step's result with the next write (``settle``, a wait's, the end's)."""
        ...

    async def settle(self) -> None:
        """Write what ``hold`` keeps back, before user code that could depend on it runs."""
        ...

    async def consume_event(
        self, event_type: str, completion: NewEvent
    ) -> DeliveredEvent | None: ...

    async def store_stream(
        self, step_name: str, chunks: AsyncIterator[bytes], form: str
    ) -> dict[str, Any]: ...

    def read_stream(self, step_name: str, chunks: int) -> AsyncIterator[bytes]: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]: ...

    async def park(self, wake_at: int | None) -> None:
        """Wait until the activation ends; ``wake_at`` None waits for a resume."""
        ...


async def park(host: StepHost, wake_at: int | None) -> NoReturn:
    """Park the calling step: the activation drops its coroutine once nothing is executing,
    so the call never returns."""
    await host.park(wake_at)
    raise AssertionError("unreachable")  # pragma: no cover
