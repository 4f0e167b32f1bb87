"""``--log-format json``: one JSON object a line, with the instance, workflow, step, attempt and
trace ids where they apply. The default stays the human-readable format.

The ids come from context variables the engine sets around an activation and a step attempt,
so every line logged inside them (the engine's, and the workflow code's own ``logging``
calls) carries them without any change to the call sites.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

import orjson

LOG_FORMATS = ("text", "json")

# (workflow, instance id) of the activation running in this context.
_instance: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "stepstone_log_instance", default=None
)
# (step name, attempt) of the step attempt running in this context.
_step: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "stepstone_log_step", default=None
)


def in_instance(workflow: str, instance_id: str) -> contextvars.Token[tuple[str, str] | None]:
    return _instance.set((workflow, instance_id))


def left_instance(token: contextvars.Token[tuple[str, str] | None]) -> None:
    _instance.reset(token)


def in_step(name: str, attempt: int) -> contextvars.Token[tuple[str, int] | None]:
    return _step.set((name, attempt))


def in_step_done() -> None:
    # Set, not reset: an attempt cut short by a cancellation never reaches its end, and the
    # next attempt's value simply replaces it.
    _step.set(None)


def _trace_ids() -> tuple[str, str] | None:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - the extra is not installed
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# ``extra={FIELDS: {...}}`` on a log call: keys a JSON line carries besides its message (the
# text format shows the message alone), so a collector need not parse the sentence.
FIELDS = "stepstone_fields"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        instance = _instance.get()
        if instance is not None:
            line["workflow"], line["instance_id"] = instance
        step = _step.get()
        if step is not None:
            line["step"], line["attempt"] = step
        ids = _trace_ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(str(key), value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def is_json() -> bool:
    """Whether lines go out as JSON: then a message printed straight to stderr would break
    the one-object-a-line promise, so it is logged instead."""
    return _state["json"]


_state = {"json": False}


def configure(log_format: str) -> None:
    """Send every log line (ours, uvicorn's, the workflow code's) to stderr in ``log_format``."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"--log-format is one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    if log_format == "text":
        return
    _state["json"] = True
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
