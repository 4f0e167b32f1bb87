"""Spans against the SDK's in-memory exporter: an activation span per activation, a child span
per step attempt, sleeps and waits, and a caller's traceparent continued into its workflow."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.api.conftest import ACCOUNT, LiveServer, start_server

FLOWS = "tests.observability.flows"
_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    # The global provider can be set once per process: after this module its exporter keeps
    # nothing, so the rest of a run does not hoard spans.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    yield _EXPORTER
    _EXPORTER.clear()
    _EXPORTER.shutdown()


@pytest.fixture
def live(tmp_path: Path, exporter: InMemorySpanExporter) -> Iterator[LiveServer]:
    server, stop = start_server(f"sqlite:///{tmp_path / 'trace.db'}")
    try:
        yield server
    finally:
        stop()


def register(live: LiveServer, class_name: str) -> str:
    name = f"trace-{uuid.uuid4().hex[:8]}"
    with live.http() as client:
        client.put(
            f"/accounts/{ACCOUNT}/workflows/{name}",
            json={"class_name": class_name, "script_name": FLOWS},
        ).raise_for_status()
    return name


def spans_of(exporter: InMemorySpanExporter, instance_id: str) -> list[ReadableSpan]:
    """The activation spans of the instance and every span under them."""
    spans = list(exporter.get_finished_spans())
    roots = {
        s.context.span_id
        for s in spans
        if (s.attributes or {}).get("stepstone.instance_id") == instance_id
    }
    return [
        s
        for s in spans
        if s.context.span_id in roots or (s.parent is not None and s.parent.span_id in roots)
    ]


def test_a_callers_trace_continues_into_its_workflow(
    live: LiveServer, exporter: InMemorySpanExporter
) -> None:
    name = register(live, "FailsOnce")
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traceparent = f"00-{trace_id}-{caller_span}-01"
    with live.http() as client:
        client.post(
            f"/accounts/{ACCOUNT}/workflows/{name}/instances",
            json={"instance_id": "t1"},
            headers={"traceparent": traceparent},
        ).raise_for_status()
    live.wait_done(name, "t1")
    spans = spans_of(exporter, "t1")
    activations = [s for s in spans if s.name == f"activation {name}"]
    # The failed attempt's retry delay parks the instance: two activations.
    assert len(activations) == 2
    # FastAPI draws the create request as a server span under the caller's; the instance
    # keeps that context, so the workflow hangs under the request that created it.
    by_id = {s.context.span_id: s for s in exporter.get_finished_spans()}
    for span in activations:
        assert format(span.context.trace_id, "032x") == trace_id
        assert span.parent is not None
        assert [link.context.span_id for link in span.links] == [span.parent.span_id]
        request_span = by_id.get(span.parent.span_id)
        above = span.parent if request_span is None else request_span.parent
        assert above is not None and format(above.span_id, "016x") == caller_span
    epochs: list[Any] = [s.attributes["stepstone.epoch"] for s in activations]  # type: ignore[index]
    assert epochs == sorted(set(epochs))  # one claim each, in order
    attempts = sorted(
        (s for s in spans if s.name.startswith("step ")),
        key=lambda s: s.start_time or 0,
    )
    assert [(s.name, s.attributes["stepstone.attempt"]) for s in attempts] == [  # type: ignore[index]
        ("step flaky-1", 1),
        ("step flaky-1", 2),
        ("step after-1", 1),
    ]
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[1].status.status_code is not StatusCode.ERROR
    ids = {s.context.span_id for s in activations}
    assert all(s.parent is not None and s.parent.span_id in ids for s in attempts)
    # The first attempt ran in the first activation, the others in the second.
    first = min(activations, key=lambda s: s.start_time or 0)
    assert attempts[0].parent is not None and attempts[0].parent.span_id == first.context.span_id


def test_waits_and_activations_of_one_instance_share_a_trace(
    live: LiveServer, exporter: InMemorySpanExporter
) -> None:
    name = register(live, "Waits")
    with live.http() as client:
        client.post(
            f"/accounts/{ACCOUNT}/workflows/{name}/instances", json={"instance_id": "w1"}
        ).raise_for_status()
        live.wait_status(name, "w1", {"waiting"})
        client.post(
            f"/accounts/{ACCOUNT}/workflows/{name}/instances/w1/events/go", json={"ok": 1}
        ).raise_for_status()
    live.wait_done(name, "w1")
    spans = spans_of(exporter, "w1")
    activations = [s for s in spans if s.name.startswith("activation ")]
    assert len(activations) == 2
    # Without a caller's trace the create request's own span (FastAPI's) is kept: both
    # activations are in its trace, linked to it.
    assert len({s.context.trace_id for s in activations}) == 1
    assert all(s.links and s.parent is not None for s in activations)
    assert {s.links[0].context.span_id for s in activations} == {
        s.parent.span_id for s in activations if s.parent is not None
    }
    # The wait is drawn in the activation that saw it end, from its recorded start.
    waits = [s for s in spans if s.name == "wait wait-1"]
    assert len(waits) == 1
    assert (waits[0].end_time or 0) - (waits[0].start_time or 0) > 0
    assert [s.name for s in spans if s.name.startswith("step ")] == ["step finish-1"]


def test_the_traceparent_is_never_shown(live: LiveServer, exporter: InMemorySpanExporter) -> None:
    name = register(live, "FailsOnce")
    trace_id = uuid.uuid4().hex
    with live.http() as client:
        client.post(
            f"/accounts/{ACCOUNT}/workflows/{name}/instances",
            json={"instance_id": "p1"},
            headers={"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"},
        ).raise_for_status()
        live.wait_done(name, "p1")
        shown: Any = client.get(f"/accounts/{ACCOUNT}/workflows/{name}/instances/p1").text
    assert trace_id not in shown
    streamed = httpx.get(
        f"{live.v4}/accounts/{ACCOUNT}/workflows/{name}/instances/p1/subscribe",
        headers={"authorization": f"Bearer {live.token}"},
        timeout=30,
    )
    assert "workflow_queued" in streamed.text or streamed.status_code != 200
    assert trace_id not in streamed.text
