"""The ASGI app: routers, the guard, and exception handlers that keep every answer enveloped."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from stepstone.errors import (
    InternalError,
    InvalidRequest,
    RouteNotFound,
    StepstoneError,
)
from stepstone.model.outage import StoreOutage
from stepstone.model.records import Conflict
from stepstone.model.version import VERSION
from stepstone.observability.http import METRICS_PATH, RequestMetrics, metrics_route
from stepstone.observability.store_gauges import StoreGauges
from stepstone.observability.tracing import TraceContext
from stepstone.ops import Operations
from stepstone.web.api.answers import Health, doc
from stepstone.web.api.front_door import FrontDoor
from stepstone.web.api.hot import HotReads
from stepstone.web.api.jobs import TerminateJobs
from stepstone.web.api.no_nul import NulInUrl
from stepstone.web.api.openapi import allowed_methods, refine
from stepstone.web.api.routes import ALL
from stepstone.web.api.routes.approvals import ApprovalPages
from stepstone.web.api.routes.subscribe import router as subscribe_router
from stepstone.web.common.auth import AuthSettings
from stepstone.web.common.envelope import error, expected_failure, ok
from stepstone.web.common.guard import OPEN_PATHS, Guard
from stepstone.web.common.outage import OutageGuard, outage_answer

log = logging.getLogger("stepstone.api")
OPENAPI_URL = "/client/v4/openapi.json"


def create_api(
    ops: Operations, *, home_account: str, auth: AuthSettings, insecure_no_auth: bool = False
) -> FastAPI:
    """The API over ``ops`` (an open engine's), its Guard innermost but for the hot reads;
    ``home_account`` is the project's account, listed even before it has a workflow. The caller
    wraps the rest around it (``stepstone.server.build_app``: the dashboard, then ``surround``)."""
    jobs = TerminateJobs()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await jobs.cancel_all()

    app = FastAPI(
        title="Stepstone Workflows API (Cloudflare v4 compatible)",
        version=VERSION,
        openapi_url=OPENAPI_URL,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        lifespan=lifespan,
    )
    app.state.ops = ops
    app.state.home_account = home_account
    app.state.terminate_jobs = jobs
    for router in ALL:
        app.include_router(router)

    @app.get(
        "/healthz",
        tags=["health"],
        summary="Liveness; needs no credentials",
        responses=doc(Health),
    )
    async def healthz() -> Response:
        return ok({"status": "ok"})

    # Behind the Guard: a token with a read permission scrapes it (docs/operations.md).
    app.add_api_route(
        METRICS_PATH, metrics_route(StoreGauges(ops.storage)), include_in_schema=False
    )
    _install_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    # Inside the Guard: the hot reads are served only to callers it let through.
    app.add_middleware(HotReads, ops=ops, routers=ALL)
    app.add_middleware(
        Guard,
        ops=ops,
        settings=auth,
        insecure_no_auth=insecure_no_auth,
    )
    app.include_router(subscribe_router)
    return app


def surround(app: FastAPI, ops: Operations) -> None:
    """The middleware outside the Guard and the dashboard, added last so that it runs first."""
    # Approval pages (an extension): their signed token is the credential, so around the Guard.
    app.add_middleware(ApprovalPages, ops=ops)
    # Outermost: the Guard's token lookups meet an outage too; it also serves /readyz.
    app.add_middleware(OutageGuard, ops=ops)
    # Before anything reads the store: a NUL in the URL matches nothing stored (no_nul.py).
    app.add_middleware(NulInUrl)
    # A browser at / or asking for /favicon.ico needs neither a token nor the store.
    app.add_middleware(FrontDoor)
    app.add_middleware(RequestMetrics)
    # A caller's traceparent, kept with the instances it creates (observability/tracing.py).
    app.add_middleware(TraceContext)


def _install_handlers(app: FastAPI) -> None:
    async def on_expected(request: Request, exc: Exception) -> Response:
        answer = expected_failure(exc)
        assert answer is not None
        return answer

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error(InvalidRequest(_describe(exc.errors())))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error(RouteNotFound(f"no route {request.method} {request.url.path}"))
        if exc.status_code == 405:
            wrong = InvalidRequest(f"{request.method} is not allowed on {request.url.path}")
            wrong.http_status = 405
            refused = error(wrong)
            refused.headers["allow"] = ", ".join(allowed_methods(app.routes, request.url.path))
            return refused
        failure = InvalidRequest(str(exc.detail))
        failure.http_status = exc.status_code
        return error(failure)

    async def on_outage(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StoreOutage)
        return outage_answer(exc)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(InternalError("an unexpected error occurred; see the server log"))

    app.add_exception_handler(StepstoneError, on_expected)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Conflict, on_expected)
    app.add_exception_handler(StoreOutage, on_outage)
    app.add_exception_handler(Exception, on_unexpected)


def _describe(errors: Any) -> str:
    """Pydantic's errors as one line: ``body.limits.steps: Input should be ...``."""
    parts = []
    for item in errors:
        if item.get("type") == "json_invalid":
            return "the request body is not valid JSON"
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg')}")
    return "; ".join(parts) or "invalid request"


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, routes=app.routes, description=_DESCRIPTION
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-Auth-Key"},
            "apiEmail": {"type": "apiKey", "in": "header", "name": "X-Auth-Email"},
        }
        schema["security"] = [{"bearer": []}, {"apiKey": [], "apiEmail": []}]
        app.openapi_schema = refine(schema, OPEN_PATHS)
    return app.openapi_schema


_DESCRIPTION = (
    "Every answer is the v4 envelope {success, errors, messages, result[, result_info]}; "
    "errors carry {code, message} with message workflows.api.error.<key>. GET endpoints "
    "need Workers Scripts Read, Workers Scripts Write or Workers Tail Read; the others need "
    "Workers Scripts Write."
)
