"""The step API a workflow's ``run()`` receives (the engine supplies the implementation)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from stepstone.authoring.durations import Duration


class WorkflowStep(Protocol):
    """``step.do`` records side effects; ``sleep``, ``sleep_until`` and ``wait_for_event`` wait."""

    def do(
        self,
        name: str | Callable[..., Any] | None = None,
        fn: Callable[..., Any] | None = None,
        *,
        config: Any = None,
        concurrent: bool = False,
        rollback: Callable[..., Any] | None = None,
        rollback_config: Any = None,
    ) -> Any: ...

    def sleep(self, name: str, duration: Duration) -> Awaitable[None]: ...

    def sleep_until(self, name: str, timestamp: datetime | int | float) -> Awaitable[None]: ...

    def wait_for_event(
        self, name: str, event_type: str, /, timeout: Duration = "24 hours"
    ) -> Awaitable[dict[str, Any]]: ...
