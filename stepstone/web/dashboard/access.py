"""Who is looking at the dashboard, and may they: the session, its token, CSRF on every POST.

A session holds an API token; each request checks that token exactly as the API checks a
Bearer header (``stepstone.web.common.auth``), so revoking a token or limiting it to accounts
applies to the dashboard the moment it applies to the API. Pages need a read permission, actions
``Workers Scripts Write``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from stepstone.errors import Forbidden, StepstoneError, Unauthorized
from stepstone.ops import Operations
from stepstone.web.common import auth as api_auth
from stepstone.web.common.guard import segment
from stepstone.web.dashboard.sessions import SESSION_COOKIE, Session, SessionStore


class SignInNeeded(Exception):
    """No live session (or its token stopped working); GETs are sent to the sign-in page."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


@dataclass
class DashboardState:
    ops: Operations
    sessions: SessionStore
    auth: api_auth.AuthSettings
    insecure_no_auth: bool


@dataclass
class Viewer:
    session_id: str
    session: Session
    principal: api_auth.Principal

    @property
    def can_write(self) -> bool:
        try:
            api_auth.authorize(self.principal, write=True, account_id=None)
        except StepstoneError:
            return False
        return True

    def may_see(self, account_id: str) -> bool:
        return self.principal.may_see(account_id)


def state(request: Request) -> DashboardState:
    value: DashboardState = request.app.state.dashboard
    return value


async def principal_for(dash: DashboardState, secret: str | None) -> api_auth.Principal:
    """The token's principal, checked as the API checks ``Authorization: Bearer``."""
    if dash.insecure_no_auth:
        return api_auth.NOBODY_NEEDED
    if not secret:
        raise Unauthorized("no token")
    headers = {"authorization": f"Bearer {secret}"}
    return await api_auth.authenticate(dash.ops, dash.auth, headers)


def same_origin(request: Request) -> bool:
    """A cross-site form post carries a foreign Origin; browsers that send none still meet
    SameSite=Strict and the CSRF token."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def viewer(request: Request) -> Viewer:
    """The signed-in viewer, allowed to do what this request does; else an error."""
    dash = state(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    session = dash.sessions.get(session_id)
    if session is None or session_id is None:
        raise SignInNeeded()
    try:
        principal = await principal_for(dash, session.secret)
    except Unauthorized:
        dash.sessions.drop(session_id)
        raise SignInNeeded("Your token is no longer valid; sign in again.") from None
    write = request.method not in ("GET", "HEAD")
    if write:
        form = await request.form()
        given = form.get("csrf")
        if not same_origin(request) or not session.csrf_ok(
            given if isinstance(given, str) else None
        ):
            raise Forbidden("the form's CSRF token is missing or stale; reload the page")
    account = request.path_params.get("account_id")
    api_auth.authorize(
        principal, write=write, account_id=None if account is None else segment(account)
    )
    return Viewer(session_id, session, principal)


ViewerDep = Annotated[Viewer, Depends(viewer)]
