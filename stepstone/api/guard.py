"""What every request passes before routing: credentials, body size, encoded slashes.

It runs as plain ASGI so that a caller without credentials learns nothing else (not even that
its JSON was malformed), and so that an oversized body is refused before it is parsed.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stepstone.api import auth
from stepstone.api.envelope import error
from stepstone.errors import PayloadTooLarge
from stepstone.storage.base import Storage

MAX_BODY_BYTES = 1 << 20
OPEN_PATHS = frozenset({"/healthz"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ACCOUNT = re.compile(r"^/client/v4/accounts/([^/]+)(?:/|$)")
_ENCODED_SLASH = re.compile(rb"%2f", re.IGNORECASE)
# An encoded '/' inside a path parameter must not split it into two segments (a workflow
# named "x%2Fversions" is not the versions of "x"). It is carried through routing as this
# private-use character and turned back into '/' by ``segment``.
SLASH_STANDIN = "\ue000"


def segment(value: str) -> str:
    """A path parameter as the client meant it, encoded slashes restored."""
    return value.replace(SLASH_STANDIN, "/")


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        storage: Storage,
        settings: auth.AuthSettings,
        insecure_no_auth: bool,
    ) -> None:
        self.app = app
        self.storage = storage
        self.settings = settings
        self.insecure_no_auth = insecure_no_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path: bytes | None = scope.get("raw_path")
        if raw_path and _ENCODED_SLASH.search(raw_path):
            path = unquote(_ENCODED_SLASH.sub(b"%EE%80%80", raw_path).decode("latin-1"))
            scope = {**scope, "path": path.split("?", 1)[0]}
        path = scope["path"]
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.insecure_no_auth:
            principal: auth.Principal = auth.NOBODY_NEEDED
        else:
            match = _ACCOUNT.match(path)
            outcome = await auth.check(
                self.storage,
                self.settings,
                Headers(scope=scope),
                write=scope["method"] not in READ_METHODS,
                account_id=segment(match.group(1)) if match else None,
            )
            if not isinstance(outcome, auth.Principal):
                await error(outcome)(scope, receive, send)
                return
            principal = outcome
        scope.setdefault("state", {})["principal"] = principal
        body = await _read_limited(scope, receive)
        if body is None:
            too_large = PayloadTooLarge(f"the request body is over {MAX_BODY_BYTES} bytes")
            await error(too_large)(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)


async def _read_limited(scope: Scope, receive: Receive) -> bytes | None:
    """The whole body, or None once it exceeds the limit."""
    length = Headers(scope=scope).get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for an app downstream of one that read the whole body already."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            message: dict[str, Any] = {"type": "http.request", "body": body, "more_body": False}
            return message
        return await receive()

    return replayed
