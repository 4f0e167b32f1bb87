"""The dashboard's ASGI app, and the gate that serves it beside the API.

The API's Guard wants API credentials on every request; the dashboard signs in with a session
cookie instead, so the gate sends ``/dashboard`` requests straight to this app, around the
Guard, and adds the headers every dashboard answer needs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stepstone.errors import StepstoneError
from stepstone.model.outage import StoreOutage
from stepstone.ops import Operations
from stepstone.web.common.auth import AuthSettings
from stepstone.web.common.outage import RETRY_AFTER_S, api_error
from stepstone.web.dashboard import present
from stepstone.web.dashboard.access import DashboardState, SignInNeeded
from stepstone.web.dashboard.sessions import SessionStore

PREFIX = "/dashboard"
# Nothing inline and nothing from elsewhere: the page's own script and stylesheet only.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("stepstone.web.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=present.when,
        duration=present.duration,
        seg=present.seg,
        pretty=present.pretty,
        breakable=present.breakable,
    )
    return Jinja2Templates(env=env)


def create_dashboard(
    ops: Operations, *, auth: AuthSettings, insecure_no_auth: bool = False
) -> FastAPI:
    from stepstone.web.dashboard import actions, operators, pages, repair_hooks

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)
    app.state.dashboard = DashboardState(ops, SessionStore(), auth, insecure_no_auth)
    app.state.templates = templates()
    app.mount(
        PREFIX + "/static",
        StaticFiles(packages=[("stepstone.web.dashboard", "static")]),
        name="static",
    )
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.include_router(operators.router)
    app.include_router(repair_hooks.router)
    _install_handlers(app)
    return app


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    tpl: Jinja2Templates = request.app.state.templates
    # What the layout reads on every page, signed in or not.
    for key, default in (("viewer", None), ("flashes", []), ("can_write", False), ("csrf", "")):
        context.setdefault(key, default)
    response = tpl.TemplateResponse(request, name, context, status_code=status_code)
    response.headers["cache-control"] = "no-store"
    return response


def _install_handlers(app: FastAPI) -> None:
    async def on_sign_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInNeeded)
        if request.method in ("GET", "HEAD") and not request.url.path.endswith("/events"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            url = f"{PREFIX}/login?next={quote(target, safe='')}"
            if exc.message:
                url += "&expired=1"
            return RedirectResponse(url, status_code=303)
        return _error_page(request, 401, "Sign in first", exc.message or "No session.")

    async def on_stepstone(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StepstoneError)
        titles = {403: "Not allowed", 404: "Not found", 401: "Sign in first"}
        title = titles.get(exc.http_status, "Something went wrong")
        return _error_page(request, exc.http_status, title, str(exc))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        title = "Not found" if exc.status_code == 404 else "Request refused"
        return _error_page(request, exc.status_code, title, str(exc.detail))

    async def on_outage(request: Request, exc: Exception) -> Response:
        # The store's health has logged the episode once; a page per request is enough here.
        assert isinstance(exc, StoreOutage)
        problem = api_error(exc)
        page = _error_page(request, problem.http_status, "The store is unavailable", str(problem))
        page.headers["retry-after"] = str(RETRY_AFTER_S.get(exc.kind, 5))
        return page

    app.add_exception_handler(SignInNeeded, on_sign_in)
    app.add_exception_handler(StepstoneError, on_stepstone)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(StoreOutage, on_outage)


def _error_page(request: Request, status: int, title: str, detail: str) -> Response:
    return render(
        request,
        "error.html",
        {"title": title, "detail": detail, "status": status, "viewer": None},
        status_code=status,
    )


class DashboardGate:
    """Routes ``/dashboard`` to the dashboard app; everything else goes on to the API."""

    def __init__(self, app: ASGIApp, *, dashboard: ASGIApp) -> None:
        self.app = app
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.dashboard(scope, receive, send_with_headers)


def mount_dashboard(
    app: FastAPI, ops: Operations, *, auth: AuthSettings, insecure_no_auth: bool = False
) -> None:
    """Serve the dashboard at ``/dashboard`` on ``app``, the API's FastAPI app."""
    dashboard = create_dashboard(ops, auth=auth, insecure_no_auth=insecure_no_auth)
    app.add_middleware(DashboardGate, dashboard=dashboard)
