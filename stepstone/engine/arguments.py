"""Checks shared by the step API's calls: a bad argument fails the instance, as Cloudflare's
engine fails it, rather than the one step."""

from __future__ import annotations

from typing import Any

from stepstone.authoring.durations import InvalidDurationError, parse_duration
from stepstone.errors import WorkflowFatalError


def duration_argument(value: Any, what: str) -> int:
    """``value`` (a duration string or milliseconds) in milliseconds; ``what`` names the
    argument in the error."""
    try:
        return parse_duration(value)
    except InvalidDurationError as exc:
        raise WorkflowFatalError(f"{what}: {exc}") from None
