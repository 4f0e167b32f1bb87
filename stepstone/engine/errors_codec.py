"""Errors as history stores them (``{name, message}``) and as replay raises them again.

A step's error reaches ``run()`` in its re-created form on the first run too, so code that
catches it behaves the same on every replay.
"""

from __future__ import annotations

import builtins
import traceback
from typing import Any

from stepstone.errors import (
    NondeterminismError,
    NonRetryableError,
    StepError,
    WorkflowFatalError,
    WorkflowTimeoutError,
)

_KNOWN: dict[str, type[Exception]] = {
    "WorkflowTimeoutError": WorkflowTimeoutError,
    "WorkflowFatalError": WorkflowFatalError,
    "NondeterminismError": NondeterminismError,
}
_RECREATED_BUILTINS = frozenset(
    {
        "ValueError",
        "TypeError",
        "KeyError",
        "IndexError",
        "RuntimeError",
        "LookupError",
        "ArithmeticError",
        "ZeroDivisionError",
        "AttributeError",
        "NotImplementedError",
        "ConnectionError",
        "TimeoutError",
        "OSError",
        "PermissionError",
        "FileNotFoundError",
        "AssertionError",
        "Exception",
    }
)


def error_name(exc: BaseException) -> str:
    # Only our own errors carry a chosen name; AttributeError.name is the missing attribute.
    if isinstance(exc, NonRetryableError | StepError) and exc.name:
        return exc.name
    return type(exc).__name__


def error_message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


# A traceback is kept with its attempt for people to read (logs, dashboard), never for the API;
# the end (where the error was raised) is what matters, so a long one loses its beginning.
MAX_TRACEBACK_CHARS = 16 * 1024
_CUT = "... (traceback truncated)\n"


def format_traceback(exc: BaseException, limit: int = MAX_TRACEBACK_CHARS) -> str:
    text = "".join(traceback.format_exception(exc))
    if len(text) <= limit:
        return text
    return _CUT + text[len(text) - (limit - len(_CUT)) :]


def encode_error(exc: BaseException) -> dict[str, Any]:
    return {"name": error_name(exc), "message": error_message(exc)}


def is_non_retryable(exc: BaseException) -> bool:
    return isinstance(exc, NonRetryableError) or error_message(exc).startswith("NonRetryableError")


def recreate_error(error: dict[str, Any] | None) -> Exception:
    error = error or {}
    name = str(error.get("name") or "Error")
    message = str(error.get("message") or "")
    if name == "NonRetryableError":
        return NonRetryableError(message)
    if name in _KNOWN:
        return _KNOWN[name](message)
    if name in _RECREATED_BUILTINS:
        cls = getattr(builtins, name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls(message)
    return StepError(name, message)
