"""Control flow of the engine that user code must not swallow.

They derive from ``BaseException``, so an ``except Exception`` in a workflow cannot catch them.
"""

from __future__ import annotations

from typing import Any


class InstanceFailed(BaseException):
    """Fail the instance at once, without rollbacks (non-serialisable output, step limit,
    nondeterminism, storage cap)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.error: dict[str, Any] = {"name": name, "message": message}


class LeaseLost(BaseException):
    """This worker no longer holds the instance (terminated, restarted, deleted, taken over)."""


class StoreLost(BaseException):
    """The store failed under a write (unreachable, disk full): the activation ends without
    recording anything, and the instance is taken up again once the store is back. It must
    not reach ``except Exception`` in workflow code, or an outage would read as a step error."""
