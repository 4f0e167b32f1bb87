"""The live instance event stream as Server-Sent Events: what ``GET .../instances/{id}/subscribe``
(``stepstone.web.api.routes.subscribe``) and the dashboard both serve.

The spec marks this endpoint uncertain (2.6); the shape chosen, and why, is in
docs/compatibility.md under "Live event stream". Each stored log event becomes one spec 3.4
event ``{instanceId, eventId, timestamp, type, ...}``; the history after the cursor comes
first, then live events, and the stream ends after ``workflow_completed``, ``workflow_errored``
or ``workflow_terminated``. The dashboard serves the same stream behind its session cookie.

A subscriber costs a bounded amount of memory however slowly it reads (issue 11): events are
read in batches of at most ``BUFFER_BYTES`` (a large output alone), a frame is handed to the
connection in pieces of ``PIECE_BYTES`` (so the connection's buffer never holds more than
about one), and a large frame is encoded once for every subscriber of its instance
(``_FrameCache``). A reader that takes more than ``SLOW_READER_S`` to accept a piece is dropped:
it is sent ``{"type": "stream_dropped", "reason": "slow_reader"}`` (no ``id``, so a reconnect
resumes after the last event it got) and the stream ends. One that reads nothing at all cannot
see that; its connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from stepstone import views
from stepstone.errors import InvalidRequest
from stepstone.model.events import SPEC_EVENTS, TERMINAL_EVENTS, EventType
from stepstone.model.records import EventRecord, InstanceRecord
from stepstone.model.statuses import TERMINAL
from stepstone.ops import Operations

EVENT_TYPES: frozenset[str] = SPEC_EVENTS
_STEP_STARTS = (EventType.STEP_STARTED, EventType.ROLLBACK_STEP_STARTED)
HEARTBEAT_SECONDS = 15.0
# The least time between two reads woken by commits: an instance stepping a thousand times a
# second costs each of its subscribers at most 20 reads a second (each taking every event
# committed meanwhile), and a lone event still arrives at once.
MIN_READ_GAP_SECONDS = 0.05
BATCH = 500
# Most event data one subscriber holds while its reader catches up (at least one event).
BUFFER_BYTES = 256 << 10
# What is handed to the connection at once; uvicorn waits for its buffer to drain (64 KiB)
# before accepting more, so a slow reader holds about this much there.
PIECE_BYTES = 64 << 10
# How long a reader may take to accept one piece before it is dropped as too slow.
SLOW_READER_S = 30.0
# Frames at least this large are shared between the subscribers of one instance.
SHARED_FRAME_BYTES = 64 << 10
SHARED_FRAMES_BYTES = 32 << 20
DROPPED = {"type": "stream_dropped", "reason": "slow_reader"}
RECONNECT_MS = 1000
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def stream_placeholder(stream: dict[str, Any]) -> str:
    """How a byte-stream output is shown wherever JSON is expected (never the raw bytes)."""
    return f"[ReadableStream (binary): {int(stream['bytes'])} bytes]"


class Redactor:
    """Remembers which steps are sensitive, from their ``step_started`` config, so a
    ``step_completed`` later in the log is shown as ``[REDACTED]``."""

    def __init__(self) -> None:
        self._sensitive: set[str] = set()

    def see(self, event: EventRecord) -> None:
        if event.type not in _STEP_STARTS or not event.data:
            return
        config = orjson.loads(event.data).get("config") or {}
        if isinstance(config, dict) and config.get("sensitive") == "output":
            self._sensitive.add(event.step_name or "")

    def hides(self, event: EventRecord) -> bool:
        # A rollback's output may well echo its forward step's, so either being sensitive hides it.
        return (event.step_name or "") in self._sensitive


def wire_event(instance_id: str, event: EventRecord, redactor: Redactor) -> dict[str, Any]:
    """One stored event in the spec 3.4 shape."""
    data = orjson.loads(event.data) if event.data else {}
    if not isinstance(data, dict):
        data = {"value": data}
    out: dict[str, Any] = {
        "instanceId": instance_id,
        "eventId": event.event_id,
        "timestamp": event.ts,
        "type": event.type,
    }
    if event.step_name is not None:
        out["stepName"] = event.step_name
    if event.type.endswith(EventType.STEP_COMPLETED):
        if redactor.hides(event):
            data = {"output": views.REDACTED}
        elif "stream" in data:
            data = {"output": stream_placeholder(data["stream"]), "stream": data["stream"]}
    for key, value in data.items():
        if key not in views.PRIVATE_EVENT_FIELDS:
            out.setdefault(key, value)
    return out


def parse_filter(value: str | None) -> frozenset[str] | None:
    if value is None or not value.strip():
        return None
    chosen = frozenset(t.strip() for t in value.split(",") if t.strip())
    unknown = sorted(chosen - EVENT_TYPES)
    if unknown:
        raise InvalidRequest(f"filter names unknown event types {unknown}")
    return chosen


def start_after(cursor: int | None, last_event_id: str | None) -> int:
    """Where delivery resumes: after the larger of ``cursor`` and EventSource's Last-Event-ID
    (a reconnecting EventSource repeats the original URL, cursor and all)."""
    after = cursor or 0
    if last_event_id and last_event_id.strip().isdigit():
        after = max(after, int(last_event_id.strip()))
    return after


def _within_budget(events: list[EventRecord]) -> tuple[list[EventRecord], bool]:
    """The first of ``events`` that fit in ``BUFFER_BYTES`` (at least one), and whether any
    were left out (they are read again next)."""
    total = 0
    for n, event in enumerate(events):
        total += len(event.data or b"")
        if total > BUFFER_BYTES and n > 0:
            return events[:n], True
    return events, False


class _FrameCache:
    """Large frames, encoded once for every subscriber of their instance (most recent kept,
    up to ``SHARED_FRAMES_BYTES``): 200 readers of one large output hold one copy, not 200."""

    def __init__(self) -> None:
        self._frames: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._bytes = 0

    def frame(self, instance_id: str, pk: int, event: EventRecord, redactor: Redactor) -> bytes:
        if len(event.data or b"") < SHARED_FRAME_BYTES:
            return sse_frame(wire_event(instance_id, event, redactor))
        # Event ids may be reused after a restart deletes the log's tail: the key says more.
        key = (pk, event.event_id, event.ts, event.type, len(event.data or b""))
        frame = self._frames.get(key)
        if frame is not None:
            self._frames.move_to_end(key)
            return frame
        frame = sse_frame(wire_event(instance_id, event, redactor))
        self._frames[key] = frame
        self._bytes += len(frame)
        while self._bytes > SHARED_FRAMES_BYTES and len(self._frames) > 1:
            _, dropped = self._frames.popitem(last=False)
            self._bytes -= len(dropped)
        return frame


_FRAMES = _FrameCache()


async def instance_events(
    ops: Operations,
    record: InstanceRecord,
    after: int,
    types: Iterable[str] | None = None,
) -> AsyncGenerator[bytes | None, None]:
    """SSE frames of the events after ``after``, then of live ones, until a terminal event or
    the instance is gone.

    Between reads it waits on the store's append signal (storage/appended.py): fired at once
    by a commit of this process that appends to the instance's log, and by the store's shared
    fallback poll (every 250 ms) for other processes' writes and for a delete, which leaves
    no event behind. An idle subscriber so reads nothing until something happens.

    Yields None when nothing happened for ``HEARTBEAT_SECONDS``, so a caller can keep an idle
    connection alive (and learn early that its client left).
    """
    wanted = None if types is None else frozenset(types)
    redactor = Redactor()
    # Sensitivity is declared at a step's start, which may lie before the cursor.
    cursor = 0
    clock = asyncio.get_running_loop().time
    last_sent = clock()
    woken = False
    with ops.watch_appends(record.pk) as watch:
        while True:
            watch.arm()  # a commit from here on wakes the wait below, even one during the read
            last_read = clock()
            loaded = await ops.events(record, cursor, BATCH)
            events, truncated = _within_budget(loaded)
            more = truncated or len(loaded) == BATCH
            found = bool(loaded)
            # Each event is let go of once sent, not at the batch's end.
            pending = deque(events)
            del loaded, events
            while pending:
                event = pending.popleft()
                cursor = event.event_id
                redactor.see(event)
                if event.event_id <= after:
                    continue
                terminal = event.type in TERMINAL_EVENTS
                frame = None
                if wanted is None or event.type in wanted:
                    frame = _FRAMES.frame(record.id, record.pk, event, redactor)
                # While the frame waits on a slow reader, only the frame (shared if large) is
                # held.
                del event
                if frame is not None:
                    yield frame
                    last_sent = clock()
                if terminal:
                    return
            if more:
                continue
            # Woken with nothing to read: the poll saw the instance gone (or a write rolled
            # back, or a poll raced a read).
            gone = woken and not found
            if gone and await ops.find_instance(record.workflow_pk, record.id) is None:
                return
            while True:
                idle = clock() - last_sent
                if idle >= HEARTBEAT_SECONDS:
                    last_sent = clock()
                    yield None
                    continue
                if await watch.wait(cursor, HEARTBEAT_SECONDS - idle):
                    break
            woken = True
            early = MIN_READ_GAP_SECONDS - (clock() - last_read)
            if early > 0:
                await asyncio.sleep(early)


async def finished(ops: Operations, record: InstanceRecord, after: int) -> bool:
    """True when the instance has ended and nothing after ``after`` is left to send."""
    if record.status not in TERMINAL:
        return False
    return not await ops.events(record, after, 1)


def sse_frame(event: dict[str, Any] | None) -> bytes:
    if event is None:
        return b": keep-alive\n\n"
    data = orjson.dumps(event)
    if "eventId" not in event:  # a notice about the stream, not an event: no id to resume at
        return b"data: %s\n\n" % data
    return b"id: %d\ndata: %s\n\n" % (event["eventId"], data)


async def sse_body(events: AsyncGenerator[bytes | None, None]) -> AsyncIterator[bytes]:
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    # Closed with the response, not whenever it is collected: it holds a watch until then.
    async with contextlib.aclosing(events):
        async for frame in events:
            yield sse_frame(None) if frame is None else frame


class EventStream(StreamingResponse):
    """A stream whose reader must keep up: a piece it takes over ``SLOW_READER_S`` to accept
    marks it too slow; it is then told so after the frame under way and the stream ends. A
    piece that waits that long again means it reads nothing: the stream stops there."""

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        body = self.body_iterator
        slow = False
        try:
            async for frame in body:
                if slow:
                    await self._drop(send)
                    return
                for start in range(0, len(frame), PIECE_BYTES):
                    piece = {
                        "type": "http.response.body",
                        "body": frame[start : start + PIECE_BYTES],
                        "more_body": True,
                    }
                    # uvicorn waits for its buffer to drain before it writes: a send cut
                    # short wrote nothing, and the same piece may be sent again.
                    for _ in range(2):
                        try:
                            async with asyncio.timeout(SLOW_READER_S):
                                await send(piece)
                            break
                        except TimeoutError:
                            if slow:
                                return  # the reader drops the partial event at EOF
                            slow = True
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _drop(send: Send) -> None:
        message = {**DROPPED, "message": f"the reader fell over {SLOW_READER_S:g}s behind"}
        try:
            async with asyncio.timeout(SLOW_READER_S):
                await send(
                    {"type": "http.response.body", "body": sse_frame(message), "more_body": True}
                )
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            pass  # it reads nothing at all: the server closes the connection


async def sse_response(
    ops: Operations, record: InstanceRecord, after: int, types: frozenset[str] | None
) -> Response:
    if await finished(ops, record, after):
        # 204 is how SSE tells an EventSource to stop reconnecting: the stream is over.
        return Response(status_code=204, headers=SSE_HEADERS)
    return EventStream(
        sse_body(instance_events(ops, record, after, types)),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
