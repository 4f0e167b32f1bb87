"""The step API a workflow's ``run()`` receives (the engine supplies the implementation)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from stepstone.authoring.durations import Duration


class WorkflowStep(Protocol):
    """``step.do`` records side effects; ``sleep``, ``sleep_until`` and ``wait_for_event`` wait;
    ``with_rollback`` and ``rollback_all`` are the saga form of Cloudflare's Python SDK page.

    Without the ``python_workflows_implicit_dependencies`` flag, ``do`` takes Cloudflare's
    legacy signature ``do(name, depends=None, concurrent=False, config=None)``.
    """

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

    def with_rollback(self, name: str, config: Any = None) -> Callable[..., Any]: ...

    def rollback_all(
        self, error: BaseException | None = None, *, continue_on_error: bool = False
    ) -> Awaitable[None]: ...
