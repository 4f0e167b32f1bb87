"""OpenTelemetry spans, when the ``otel`` extra is installed; nothing otherwise.

One span per activation of an instance and one per step attempt, a child of its activation.
Every activation's span is a child of the trace context the create request carried (its W3C
``traceparent``, kept in the instance's ``workflow_queued`` event, which no API view shows),
so a caller's trace continues into its workflow, and all activations of one instance share
that trace; each also links to it, for back ends that draw links.

``configure_from_env`` installs the SDK's tracer provider when ``OTEL_TRACES_EXPORTER`` is set
(``console``, or ``otlp`` with the OTLP exporter package installed); a provider set by the
embedding program is used as it is.
"""

from __future__ import annotations

import contextvars
import os
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

try:
    from opentelemetry import trace
    from opentelemetry.trace import Link, ProxyTracerProvider, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - the extra is not installed
    trace = None  # type: ignore[assignment]

from stepstone.storage.base import NewInstance

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
# The caller's trace context while a request is answered; read when instances are created.
_incoming: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stepstone_traceparent", default=None
)


def enabled() -> bool:
    return trace is not None


def configure_from_env() -> None:
    """Raises ``ValueError`` saying what to install or set when the environment asks for an
    exporter that is not there."""
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter_name in ("", "none"):
        return
    if trace is None:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={exporter_name} needs the otel extra:"
            " pip install 'stepstone[otel]'"
        )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    exporter: SpanExporter
    if exporter_name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError:
            raise ValueError(
                "OTEL_TRACES_EXPORTER=otlp needs pip install opentelemetry-exporter-otlp-proto-http"
            ) from None
        exporter = OTLPSpanExporter()
    else:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={exporter_name} is not supported; use console, otlp or none"
        )
    provider = TracerProvider(resource=Resource.create({"service.name": "stepstone"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def carried() -> str | None:
    """The trace context to keep with instances created now: the current span's if there is
    one, else the caller's ``traceparent`` header."""
    if trace is not None:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier)
            if "traceparent" in carrier:
                return carrier["traceparent"]
    return _incoming.get()


def stamp(items: Sequence[NewInstance]) -> Sequence[NewInstance]:
    """``items`` with the trace context of the caller, in the caller's context (a batched
    write runs later, in another task)."""
    parent = carried()
    if parent is None:
        return items
    return [replace(item, traceparent=parent) for item in items]


class TraceContext:
    """Keeps the request's valid ``traceparent`` header for ``carried``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"traceparent":
                    text = value.decode("latin-1").strip().lower()
                    if _TRACEPARENT.match(text):
                        token = _incoming.set(text)
                        try:
                            await self.app(scope, receive, send)
                        finally:
                            _incoming.reset(token)
                        return
        await self.app(scope, receive, send)


class Span:
    """A started span (or nothing); ``end`` records the outcome once."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Any, token: Any) -> None:
        self._span = span
        self._token = token

    @property
    def ids(self) -> tuple[str, str] | None:
        if self._span is None:
            return None
        context = self._span.get_span_context()
        return format(context.trace_id, "032x"), format(context.span_id, "016x")

    def end(self, error: BaseException | None = None) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()
        if self._token is not None:
            from opentelemetry import context as otel_context

            otel_context.detach(self._token)
            self._token = None


_NOTHING = Span(None, None)


def _tracer() -> Any:
    """Stepstone's tracer, or None while no SDK provider is installed: the API's no-op spans
    would still cost every step attempt a few microseconds."""
    if trace is None or isinstance(trace.get_tracer_provider(), ProxyTracerProvider):
        return None
    return trace.get_tracer("stepstone")


def activation(workflow: str, instance_id: str, traceparent: str | None, epoch: int) -> Span:
    """The span of one activation, made current for the steps it runs; ``epoch`` is its
    claim's (it grows with every claim of the instance)."""
    tracer = _last_tracer[0] = _tracer()
    if tracer is None:
        return _NOTHING
    from opentelemetry import context as otel_context

    parent = (
        TraceContextTextMapPropagator().extract({"traceparent": traceparent})
        if traceparent
        else otel_context.Context()
    )
    parent_context = trace.get_current_span(parent).get_span_context()
    links = [Link(parent_context)] if parent_context.is_valid else []
    span = tracer.start_span(
        f"activation {workflow}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={
            "stepstone.workflow": workflow,
            "stepstone.instance_id": instance_id,
            "stepstone.epoch": epoch,
        },
    )
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    return Span(span, token)


def _in_activation() -> Any:
    """The tracer of the activation whose span is current, or None: one context read, where
    asking for the provider each step attempt would cost several microseconds."""
    # No activation had a tracer (no SDK provider): no context read at all.
    if trace is None or _last_tracer[0] is None or not trace.get_current_span().is_recording():
        return None
    return _last_tracer[0]


_last_tracer: list[Any] = [None]


def step_attempt(kind: str, name: str, attempt: int) -> Span:
    """The span of one step attempt, a child of the current activation's span."""
    tracer = _in_activation()
    if tracer is None:
        return _NOTHING
    span = tracer.start_span(
        f"step {name}",
        attributes={
            "stepstone.step": name,
            "stepstone.step_kind": kind,
            "stepstone.attempt": attempt,
        },
    )
    return Span(span, None)


def wait(kind: str, name: str, started_ms: int) -> None:
    """A finished sleep or wait, drawn from its recorded start to now."""
    tracer = _in_activation()
    if tracer is None:
        return
    span = tracer.start_span(
        f"{kind} {name}", start_time=started_ms * 1_000_000, attributes={"stepstone.step": name}
    )
    span.end(end_time=time.time_ns())
