"""Refuses a NUL character (U+0000) where the API takes text: in the path or query string
(``NulInUrl``) and in a body's free-text fields (``NO_NUL``, a pattern).

PostgreSQL text cannot hold one, so no stored account, name, id, secret or filter value holds
it: looked up or written there it failed as a server error, where SQLite went on. Refused
before the store is reached, it is a 400 alike on every backend. Payloads (params, events,
outputs) are stored as bytes and keep any character.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from stepstone.errors import InvalidRequest
from stepstone.web.common.envelope import error

NO_NUL = r"^[^\x00]*$"
NUL_IN_URL = "a URL may not hold a NUL character (U+0000, %00)"


class NulInUrl:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The path arrives decoded, the query string still escaped (a NUL only as %00).
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope["query_string"]):
            await error(InvalidRequest(NUL_IN_URL))(scope, receive, send)
            return
        await self.app(scope, receive, send)
