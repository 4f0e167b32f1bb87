"""Step outputs and instance results: how they are encoded, stored and given back on replay.

A value is stored as JSON of at most 1 MiB, Cloudflare's limit. A step that returns bytes, or
an async iterator of bytes (a Stepstone extension), stores a byte stream in chunks beside the
history instead, and its record keeps only the stream's summary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from stepstone.engine.errors_codec import recreate_error
from stepstone.engine.signals import InstanceFailed
from stepstone.errors import StepError
from stepstone.model import history as h

if TYPE_CHECKING:
    from stepstone.engine.step_host import StepHost

MAX_JSON_BYTES = 1 << 20
STREAM_CHUNK_BYTES = 256 * 1024
ENCODE_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def encode_json(value: Any, what: str) -> bytes:
    """Encode a step output or instance result, or fail the instance: it cannot be stored."""
    try:
        return orjson.dumps(value, option=ENCODE_OPTIONS)
    except TypeError as exc:
        raise InstanceFailed(
            "WorkflowFatalError", f"Value returned from {what} is not serialisable: {exc}"
        ) from None


async def encode_output(host: StepHost, step_name: str, value: Any) -> bytes | dict[str, Any]:
    """Return the output encoded as JSON, or the stream summary after storing it."""
    if isinstance(value, bytes | bytearray | memoryview):
        return await host.store_stream(step_name, _iter_bytes(bytes(value)), "bytes")
    if hasattr(value, "__aiter__"):
        return await host.store_stream(step_name, _rechunk(value), "iterator")
    encoded = encode_json(value, f'step "{step_name}"')
    if len(encoded) > MAX_JSON_BYTES:
        # Cloudflare's engine fails the attempt with this error and retries it by policy.
        raise StepError(
            "WorkflowInternalError",
            f"Step {step_name} output is too large. Maximum allowed size is 1MiB.",
        )
    return encoded


async def recorded_result(host: StepHost, record: h.StepRecord) -> Any:
    """What a finished step returns on replay: its output, or its error raised again."""
    if not record.success:
        raise recreate_error(record.error)
    if record.stream is not None:
        return await stream_value(host, record.name, record.stream)
    return recorded_json(record)


def recorded_json(record: h.StepRecord | None) -> Any:
    """A step's JSON output as recorded; None for a stream, a failure or no record."""
    if record is None or not record.success or record.output is None:
        return None
    return orjson.loads(record.output)


async def stream_value(host: StepHost, step_name: str, stream: dict[str, Any]) -> Any:
    """A stored stream as its step returned it: ``bytes`` again, or an async iterator."""
    chunks = host.read_stream(step_name, int(stream["chunks"]))
    if stream.get("form") == "bytes":
        return b"".join([chunk async for chunk in chunks])
    return chunks


async def _iter_bytes(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), STREAM_CHUNK_BYTES):
        yield data[start : start + STREAM_CHUNK_BYTES]


async def _rechunk(source: Any) -> AsyncIterator[bytes]:
    buffer = bytearray()
    async for chunk in source:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise InstanceFailed(
                "WorkflowFatalError",
                f"A byte-stream step yielded {type(chunk).__name__}; yield bytes only",
            )
        buffer += chunk
        while len(buffer) >= STREAM_CHUNK_BYTES:
            yield bytes(buffer[:STREAM_CHUNK_BYTES])
            del buffer[:STREAM_CHUNK_BYTES]
    if buffer:
        yield bytes(buffer)
