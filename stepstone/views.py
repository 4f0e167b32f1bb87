"""Records and histories rendered as the exact JSON shapes of Cloudflare's v4 API.

Field names and casing follow the API (``versionId`` in details, ``version_id`` in lists); every
timestamp is ISO-8601 UTC with milliseconds and ``Z``, so clients that sort dates as strings
(wrangler) sort them correctly. Rendering decisions the spec leaves open are recorded in
docs/compatibility.md under "REST API".
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import orjson

from stepstone.cron import next_fire_ms
from stepstone.model import history as h
from stepstone.model.statuses import ALL_STATUSES, Status
from stepstone.storage.base import (
    InstanceLinks,
    InstanceRecord,
    InstanceSummary,
    VersionRecord,
    WorkflowRecord,
)

REDACTED = "[REDACTED]"
# Fields of the recorded event data that are for people (logs, dashboard), never for the API:
# an attempt_errored event keeps the attempt's Python traceback there.
PRIVATE_EVENT_FIELDS = frozenset({"traceback", "traceparent"})
# Step outputs in instance details are previews; GET .../step serves the whole value.
STEP_OUTPUT_PREVIEW_CHARS = 1024
DEFAULT_STEPS_LIMIT = 10_000
DEFAULT_STEP_CONFIG: dict[str, Any] = {
    "retries": {"limit": 5, "delay": 10_000, "backoff": "exponential"},
    "timeout": "10 minutes",
}


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as ``2026-05-01T02:48:57.132Z``."""
    if ms is None:
        return None
    return _iso_second(ms // 1000) + f"{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    # A history's timestamps crowd into few seconds, and formatting a datetime costs most of
    # a step's entry in instance details: each second is formatted once.
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def _json(data: bytes | None) -> Any:
    return None if data is None else orjson.loads(data)


def as_text(value: Any) -> str:
    """A JSON value as text: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def instance_output(data: bytes | None) -> str | int | float:
    """The SDK requires a non-null string or number: numbers stay numbers, strings stay
    strings, everything else (objects, arrays, booleans, null) is compact JSON text, and an
    instance with no output yet shows an empty string."""
    if data is None:
        return ""
    value = orjson.loads(data)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return as_text(value)


def preview(value: Any) -> str:
    return _cut(as_text(value))


def _cut(text: str) -> str:
    if len(text) > STEP_OUTPUT_PREVIEW_CHARS:
        return text[:STEP_OUTPUT_PREVIEW_CHARS]
    return text


# --- workflows and versions -------------------------------------------------------------------


def instance_counts(counts: dict[str, int]) -> dict[str, int]:
    return {status: int(counts.get(status, 0)) for status in ALL_STATUSES}


def schedules(version: VersionRecord, now_ms: int) -> list[dict[str, Any]]:
    return [
        {"cron": cron, "next_instance": iso(next_fire_ms(cron, now_ms))}
        for cron in version.schedules
    ]


def _workflow_fields(record: WorkflowRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "class_name": record.version.class_name,
        "script_name": record.version.script_name,
        "created_on": iso(record.created_on),
        "modified_on": iso(record.modified_on),
        "triggered_on": iso(record.triggered_on),
    }


def workflow(record: WorkflowRecord, counts: dict[str, int], now_ms: int) -> dict[str, Any]:
    """A workflows list item, also the answer of GET .../workflows/{name}."""
    return {
        **_workflow_fields(record),
        "instances": instance_counts(counts),
        "schedules": schedules(record.version, now_ms),
    }


def workflow_put(record: WorkflowRecord) -> dict[str, Any]:
    return {
        **_workflow_fields(record),
        "version_id": record.version.id,
        "is_deleted": 0,
        "terminator_running": 0,
    }


def _version_base(version: VersionRecord, workflow: WorkflowRecord) -> dict[str, Any]:
    return {
        "id": version.id,
        "workflow_id": workflow.id,
        "class_name": version.class_name,
        "script_name": version.script_name,
        "created_on": iso(version.created_on),
        # A version never changes once deployed.
        "modified_on": iso(version.created_on),
    }


def version(version: VersionRecord, workflow: WorkflowRecord) -> dict[str, Any]:
    out = _version_base(version, workflow)
    out["has_dag"] = False
    out["language"] = version.language
    out["limits"] = {"steps": version.limits_steps or DEFAULT_STEPS_LIMIT}
    if version.success_retention_ms is not None or version.error_retention_ms is not None:
        out["default_retention"] = {
            "success_retention": version.success_retention_ms,
            "error_retention": version.error_retention_ms,
        }
    return out


def version_graph(version: VersionRecord, workflow: WorkflowRecord) -> dict[str, Any]:
    return {**_version_base(version, workflow), "graph": None}


def version_dag(version: VersionRecord, workflow: WorkflowRecord) -> dict[str, Any]:
    return {**_version_base(version, workflow), "dag": None}


# --- instances --------------------------------------------------------------------------------


def instance_created(record: InstanceRecord, workflow: WorkflowRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "status": record.status,
        "version_id": record.version_id,
        "workflow_id": workflow.id,
        "trigger_source": record.trigger_source,
    }


def instance_item(record: InstanceRecord, workflow: WorkflowRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "status": record.status,
        "version_id": record.version_id,
        "workflow_id": workflow.id,
        "created_on": iso(record.created_on),
        "modified_on": iso(record.modified_on),
        "started_on": iso(record.started_on),
        "ended_on": iso(record.ended_on),
        "trigger_source": record.trigger_source,
    }


def _success(status: str) -> bool | None:
    if status == Status.COMPLETE:
        return True
    if status in (Status.ERRORED, Status.TERMINATED):
        return False
    return None


def instance_details(
    record: InstanceRecord, history: h.InstanceHistory, *, order: str = "asc", simple: bool = False
) -> dict[str, Any]:
    """GET .../instances/{id}: metadata plus one entry per step, as spec 7.3 derives them."""
    entries = [step_entry(step) for step in history.ordered()]
    if history.terminated_by is not None:
        entries.append({"type": "termination", "trigger": dict(history.terminated_by)})
    if order == "desc":
        entries.reverse()
    return _details(
        record,
        queued=history.queued_at,
        started=history.started_at,
        step_count=len(entries),
        steps=[] if simple else entries,
    )


def instance_summary(record: InstanceRecord, summary: InstanceSummary) -> dict[str, Any]:
    """GET .../instances/{id}?simple=true, from the row and its summary: the same answer as
    ``instance_details(..., simple=True)`` without folding the history."""
    return _details(
        record,
        queued=summary.queued_at,
        started=summary.started_at,
        step_count=summary.step_count + (1 if summary.terminated else 0),
        steps=[],
    )


def _details(
    record: InstanceRecord,
    *,
    queued: int | None,
    started: int | None,
    step_count: int,
    steps: list[dict[str, Any]],
) -> dict[str, Any]:
    details: dict[str, Any] = {
        "status": record.status,
        "params": _json(record.params),
        "trigger": {"source": record.trigger_source},
        "versionId": record.version_id,
        "queued": iso(queued or record.created_on),
        "start": iso(record.started_on or started),
        "end": iso(record.ended_on),
        "success": _success(record.status),
        "error": _json(record.error),
        "output": instance_output(record.output),
        "step_count": step_count,
        "steps": steps,
        "rollback": _json(record.rollback),
    }
    if record.schedule is not None:
        details["schedule"] = _json(record.schedule)
    return details


def step_entry(step: h.StepRecord) -> dict[str, Any]:
    if step.kind in (h.SLEEP, h.WAIT):
        entry = {
            "type": "sleep" if step.kind == h.SLEEP else "waitForEvent",
            "name": step.name,
            "start": iso(step.start),
            # Until it finishes, a sleep's or a wait's end is its planned wake-up time.
            "end": iso(step.end if step.end is not None else step.wake_at),
            "finished": step.done,
            "error": step.error,
        }
        if step.kind == h.WAIT:
            entry["event_type"] = step.event_type
            entry["output"] = None if step.event is None else preview(step.event.get("payload"))
        return entry
    return {
        "type": "rollback" if step.kind == h.ROLLBACK else "step",
        "name": step.name,
        "start": iso(step.start),
        "end": iso(step.end),
        "success": step.success,
        "output": _step_output_preview(step),
        "attempts": [
            {
                "start": iso(a.start),
                "end": iso(a.end),
                "success": a.success,
                "error": a.error,
            }
            for a in step.attempts
        ],
        "config": step.config or DEFAULT_STEP_CONFIG,
    }


def _step_output_preview(step: h.StepRecord) -> str | None:
    if not step.success:
        return None
    if step.sensitive:
        return REDACTED
    if step.stream is not None:
        return f"[ReadableStream (binary): {int(step.stream['bytes'])} bytes]"
    if step.output is None:
        return None
    if not step.output.startswith(b'"'):
        # The fold re-encodes outputs with orjson (compact): anything but a string is
        # already its own compact JSON text.
        return _cut(step.output.decode())
    return preview(orjson.loads(step.output))


# --- the step endpoint ------------------------------------------------------------------------


def step_result(
    step: h.StepRecord, attempt: h.AttemptRecord | None, *, spliced: bool = False
) -> dict[str, Any]:
    """The JSON answer of GET .../step (spec 2.5, 7.12); byte streams are served elsewhere.

    ``spliced``: a step's output stays the encoded bytes the fold holds, for orjson to copy into
    the answer (``orjson.Fragment``) instead of decoding and encoding it again."""
    if step.kind == h.WAIT:
        status = ("complete" if step.success else "errored") if step.done else "waiting"
        payload = None
        if step.success and step.event is not None:
            payload = step.event.get("payload")
        return {
            "status": status,
            "error": step.error,
            "output": payload,
            "event_type": step.event_type,
        }
    if attempt is not None:
        if attempt.success is None:
            return {"status": "running", "error": None, "output": None}
        if not attempt.success:
            return {"status": "errored", "error": attempt.error, "output": None}
        return {"status": "complete", "error": None, "output": _full_output(step, spliced)}
    if step.done:
        if step.success:
            return {"status": "complete", "error": None, "output": _full_output(step, spliced)}
        return {"status": "errored", "error": step.error, "output": None}
    last = step.attempts[-1] if step.attempts else None
    # Between retries the step is still running, and the error says why it is retrying.
    error = last.error if last is not None and last.success is False else None
    return {"status": "running", "error": error, "output": None}


def _full_output(step: h.StepRecord, spliced: bool) -> Any:
    if step.sensitive:
        return REDACTED
    if step.output is None:
        return None
    return orjson.Fragment(step.output) if spliced else orjson.loads(step.output)


def links_fields(links: InstanceLinks) -> dict[str, Any]:
    """Instance details' extension fields for an instance with a parent or children: nothing
    for any other instance, so what Cloudflare's clients see of those never changes (the SDK's
    models allow extra keys, and this one is namespaced)."""
    if links.parent is None and not links.children:
        return {}
    parent = links.parent
    return {
        "stepstone": {
            "parent": None
            if parent is None
            else {"workflow": parent.workflow, "id": parent.id, "status": parent.status},
            "children": [
                {"workflow": c.workflow, "id": c.id, "status": c.status, "detached": c.detached}
                for c in links.children
            ],
        }
    }
