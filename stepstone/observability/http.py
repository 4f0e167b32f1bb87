"""``GET /metrics`` and the per-request series.

On the API the route sits behind the Guard like any GET: any token with a read permission
scrapes it. ``--metrics-addr`` serves the same text on a separate address with no token, for a
scraper on a private network, and is how a worker without the API is scraped.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stepstone.observability import metrics
from stepstone.observability.store_gauges import StoreGauges
from stepstone.storage.base import Storage

log = logging.getLogger("stepstone.metrics")
METRICS_PATH = "/metrics"


async def scrape(gauges: StoreGauges | None) -> Response:
    """The text format; the store's series from their last reading if the store fails now."""
    if gauges is not None:
        try:
            await gauges.refresh()
        except Exception as exc:
            log.debug("store gauges not refreshed: %s", exc)
    return Response(metrics.render(gauges), media_type=metrics.CONTENT_TYPE_LATEST)


def metrics_route(gauges: StoreGauges) -> Any:
    async def get_metrics(request: Request) -> Response:
        return await scrape(gauges)

    return get_metrics


class MetricsOnly:
    """The ASGI app of ``--metrics-addr``: ``GET /metrics`` and nothing else."""

    def __init__(self, storage: Storage | None) -> None:
        self.gauges = StoreGauges(storage) if storage is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["path"] != METRICS_PATH:
            answer = Response("only GET /metrics is served here\n", status_code=404)
        elif scope["method"] not in ("GET", "HEAD"):
            answer = Response("GET /metrics\n", status_code=405, headers={"allow": "GET, HEAD"})
        else:
            answer = await scrape(self.gauges)
        await answer(scope, receive, send)


class RequestMetrics:
    """Counts every answer by method, route template and status, and times it; outermost, so
    refusals by the Guard and the outage guard count too. Paths are never labels (an instance
    id would make a series per instance): an unmatched path is ``unmatched``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = _route(scope)
                metrics.HTTP_SECONDS.labels(scope["method"], route).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            metrics.HTTP_REQUESTS.labels(scope["method"], _route(scope), str(status)).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    if scope["path"].startswith("/dashboard"):
        return "/dashboard"
    return "unmatched"


def parse_addr(text: str) -> tuple[str, int]:
    """``--metrics-addr``: ``host:port``, ``[v6]:port`` or a bare port (on 127.0.0.1)."""
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = "", value
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(
            f"--metrics-addr {text!r}: give host:port (e.g. 127.0.0.1:9464) or a port 1-65535"
        )
    return host, int(port_text)
