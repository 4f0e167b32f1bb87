"""Recorded instances: read from a store, or from a history exported as JSON.

The export is what the replay checker reads, so a production history can be replayed in a
test. Its shape extends the one of ``tests/engine/histories`` (``workflow``, ``params``,
``events`` with base64 ``data``): a file holding one such instance is read as well.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from stepstone.model.events import EventType
from stepstone.model.statuses import ALL_STATUSES, Status
from stepstone.storage.base import EventRecord, InstanceQuery, InstanceRecord, Storage

EXPORT_FORMAT = "stepstone-history"
EXPORT_VERSION = 1
PAGE = 500


class HistoryFileError(ValueError):
    """An exported history that cannot be read; the message says where."""


@dataclass(frozen=True, slots=True)
class RecordedInstance:
    """One instance as recorded: enough to replay ``run()`` against it."""

    workflow: str
    id: str
    status: str
    params: bytes
    created_on: int
    events: list[EventRecord]
    schedule: bytes | None = None
    output: bytes | None = None
    error: bytes | None = None
    # Byte-stream step outputs (step name -> chunks), when exported; otherwise read from
    # the store the instance came from.
    streams: dict[str, list[bytes]] = field(default_factory=dict)
    pk: int | None = None


def from_record(
    workflow: str, record: InstanceRecord, events: list[EventRecord]
) -> RecordedInstance:
    return RecordedInstance(
        workflow=workflow,
        id=record.id,
        status=record.status,
        params=record.params,
        created_on=record.created_on,
        events=events,
        schedule=record.schedule,
        output=record.output,
        error=record.error,
        pk=record.pk,
    )


async def select(
    storage: Storage,
    account_id: str | None,
    *,
    workflow: str | None = None,
    instance: str | None = None,
    status: str | None = None,
) -> AsyncIterator[RecordedInstance]:
    """The recorded instances that match, workflow by workflow, oldest first."""
    if status is not None and status not in ALL_STATUSES:
        raise ValueError(f"unknown status {status!r}; choose from {', '.join(ALL_STATUSES)}")
    records, _ = await storage.list_workflows(account_id, None, 0, 1_000_000)
    chosen = [r for r in records if workflow is None or r.name == workflow]
    if workflow is not None and not chosen:
        raise LookupError(f"no workflow {workflow!r} in this store")
    for wf in sorted(chosen, key=lambda r: r.name):
        if instance is not None:
            found = await storage.get_instance(wf.pk, instance)
            rows = [found] if found is not None and status in (None, found.status) else []
            for row in rows:
                yield from_record(wf.name, row, await storage.load_events(row.pk))
            continue
        after: tuple[int, str] | None = None
        while True:
            query = InstanceQuery(status=status, after=after, ascending=True, limit=PAGE)
            page = await storage.list_instances(wf.pk, query)
            for row in page:
                yield from_record(wf.name, row, await storage.load_events(row.pk))
            if len(page) < PAGE:
                break
            after = (page[-1].created_on, page[-1].id)


# --- the JSON export ------------------------------------------------------------------------


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _json_or_none(data: bytes | None) -> Any:
    return None if data is None else orjson.loads(data)


def encode_instance(item: RecordedInstance) -> dict[str, Any]:
    return {
        "workflow": item.workflow,
        "id": item.id,
        "status": item.status,
        "params": orjson.loads(item.params),
        "created_on": item.created_on,
        "schedule": _json_or_none(item.schedule),
        "output": _json_or_none(item.output),
        "error": _json_or_none(item.error),
        "events": [
            {
                "event_id": e.event_id,
                "ts": e.ts,
                "type": e.type,
                "step_kind": e.step_kind,
                "step_name": e.step_name,
                "data": _b64(e.data),
            }
            for e in item.events
        ],
        "streams": {
            name: [base64.b64encode(c).decode() for c in chunks]
            for name, chunks in item.streams.items()
        },
    }


def encode_export(items: Sequence[RecordedInstance]) -> bytes:
    document = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "instances": [encode_instance(i) for i in items],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


async def with_streams(storage: Storage, item: RecordedInstance) -> RecordedInstance:
    """``item`` carrying its byte-stream outputs, so an export replays without the store."""
    if item.pk is None:
        return item
    streams: dict[str, list[bytes]] = {}
    for event in item.events:
        if event.type != EventType.STEP_COMPLETED or event.step_name is None or not event.data:
            continue
        stream = orjson.loads(event.data).get("stream")
        if isinstance(stream, dict):
            reader = storage.read_stream(item.pk, event.step_name, int(stream["chunks"]))
            streams[event.step_name] = [chunk async for chunk in reader]
    return RecordedInstance(**{**_fields(item), "streams": streams})


def _fields(item: RecordedInstance) -> dict[str, Any]:
    return {name: getattr(item, name) for name in RecordedInstance.__dataclass_fields__}


def decode_export(data: bytes, where: str = "the history file") -> list[RecordedInstance]:
    """Read an export (or one recorded instance in the tests' history shape)."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise HistoryFileError(f"{where} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise HistoryFileError(f"{where}: expected a JSON object")
    if "instances" in document:
        if document.get("format") != EXPORT_FORMAT:
            raise HistoryFileError(f"{where}: format is not {EXPORT_FORMAT!r}")
        if document.get("version") != EXPORT_VERSION:
            raise HistoryFileError(
                f"{where}: version {document.get('version')!r} is not {EXPORT_VERSION}"
            )
        raw = document["instances"]
        if not isinstance(raw, list):
            raise HistoryFileError(f"{where}: instances must be a list")
    else:
        raw = [document]
    return [_decode_instance(item, f"{where}: instance {n}") for n, item in enumerate(raw)]


def _decode_instance(item: Any, where: str) -> RecordedInstance:
    if not isinstance(item, dict):
        raise HistoryFileError(f"{where}: expected an object")
    try:
        events = [_decode_event(e, n) for n, e in enumerate(item["events"], start=1)]
        workflow = str(item["workflow"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HistoryFileError(f"{where}: {exc.__class__.__name__}: {exc}") from None
    status = str(item.get("status") or _status_of(events))
    if status not in ALL_STATUSES:
        raise HistoryFileError(f"{where}: unknown status {status!r}")
    first_ts = events[0].ts if events else 0

    def dumped(key: str) -> bytes | None:
        value = item.get(key)
        return None if value is None else orjson.dumps(value)

    try:
        streams = {
            str(name): [base64.b64decode(c) for c in chunks]
            for name, chunks in (item.get("streams") or {}).items()
        }
    except (TypeError, ValueError, AttributeError) as exc:
        raise HistoryFileError(f"{where}: streams: {exc}") from None
    return RecordedInstance(
        workflow=workflow,
        id=str(item.get("id") or "recorded"),
        status=status,
        params=orjson.dumps(item.get("params")),
        created_on=int(item.get("created_on") or first_ts),
        events=events,
        schedule=dumped("schedule"),
        output=dumped("output"),
        error=dumped("error"),
        streams=streams,
    )


def _decode_event(raw: Any, number: int) -> EventRecord:
    if not isinstance(raw, dict):
        raise ValueError(f"event {number} is not an object")
    data = raw.get("data")
    return EventRecord(
        event_id=int(raw.get("event_id") or number),
        ts=int(raw.get("ts") or 0),
        type=str(raw["type"]),
        step_kind=raw.get("step_kind"),
        step_name=raw.get("step_name"),
        data=None if data is None else base64.b64decode(data),
    )


def _status_of(events: list[EventRecord]) -> str:
    """The status a history without one ended in (the tests' recorded shape)."""
    ends = {
        EventType.WORKFLOW_COMPLETED: Status.COMPLETE,
        EventType.WORKFLOW_ERRORED: Status.ERRORED,
        EventType.WORKFLOW_TERMINATED: Status.TERMINATED,
    }
    for event in reversed(events):
        if event.step_kind is None and event.type in ends:
            return ends[event.type]
    return Status.WAITING if events else Status.QUEUED
