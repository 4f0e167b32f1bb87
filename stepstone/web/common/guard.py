"""What every request passes before routing: credentials, body size, encoded slashes, and the
two input rules no route declares: a query key appears once, and a JSON body is strict JSON.

It runs as plain ASGI so that a caller without credentials learns nothing else (not even that
its JSON was malformed), and so that an oversized body is refused before it is parsed.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stepstone.errors import InvalidRequest, PayloadTooLarge, TooManyRequests, Unauthorized
from stepstone.ops import Queries
from stepstone.web.common import auth, subscribe_token
from stepstone.web.common.envelope import error
from stepstone.web.common.throttle import for_ops

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
        ops: Queries,
        settings: auth.AuthSettings,
        insecure_no_auth: bool,
    ) -> None:
        self.app = app
        self.ops = ops
        self.settings = settings
        self.insecure_no_auth = insecure_no_auth
        self.throttle = for_ops(ops)

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
            outcome = await self._authenticate(scope, path)
            if not isinstance(outcome, auth.Principal):
                await outcome(scope, receive, send)
                return
            principal = outcome
        scope.setdefault("state", {})["principal"] = principal
        body = await _read_limited(scope, receive)
        if body is None:
            too_large = PayloadTooLarge(f"the request body is over {MAX_BODY_BYTES} bytes")
            await error(too_large)(scope, receive, send)
            return
        problem = repeated_key(scope["query_string"]) or not_strict_json(scope, body)
        if problem is not None:
            await error(InvalidRequest(problem))(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)

    async def _authenticate(self, scope: Scope, path: str) -> auth.Principal | Response:
        """The caller, or the answer that refuses it; wrong tokens are throttled."""
        address = client_address(scope)
        wait = self.throttle.retry_after(address)
        if wait is not None:
            refused = error(TooManyRequests(f"too many wrong tokens; retry in {wait} s"))
            refused.headers["retry-after"] = str(wait)
            return refused
        headers = Headers(scope=scope)
        token = _subscribe_token(scope, headers)
        if token is not None:
            reader = await subscribe_token.principal(self.ops, path, token, int(time.time() * 1000))
            if reader is not None:
                self.throttle.succeeded(address)
                return reader
            await self.throttle.fail(address)
            return error(
                Unauthorized("the subscribe token is invalid, expired or for another stream")
            )
        match = _ACCOUNT.match(path)
        outcome = await auth.check(
            self.ops,
            self.settings,
            headers,
            write=scope["method"] not in READ_METHODS,
            account_id=segment(match.group(1)) if match else None,
        )
        if isinstance(outcome, auth.Principal) or outcome.http_status == 403:
            self.throttle.succeeded(address)
        elif auth.credential(headers):
            # Only a token that was given and is wrong is a guess; none at all is not.
            await self.throttle.fail(address)
        return outcome if isinstance(outcome, auth.Principal) else error(outcome)


def _subscribe_token(scope: Scope, headers: Headers) -> str | None:
    """A subscribe token in the query of a GET that carries no other credential."""
    if scope["method"] != "GET" or auth.credential(headers):
        return None
    query: bytes = scope["query_string"]
    for key, value in parse_qsl(query.decode("latin-1")):
        if key == subscribe_token.QUERY_KEY:
            return value
    return None


def repeated_key(query_string: bytes) -> str | None:
    """Every parameter of this API is singular, so a repeated key is refused rather than one
    of its values silently chosen."""
    if b"&" not in query_string:
        return None
    seen: set[str] = set()
    for key, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key in seen:
            return f"the query parameter {key!r} is given more than once"
        seen.add(key)
    return None


def json_typed(content_type: str | None) -> bool:
    """Whether FastAPI would decode the body as JSON: no type, or application/json or
    application/*+json."""
    if not content_type:
        return True
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def not_strict_json(scope: Scope, body: bytes) -> str | None:
    """FastAPI decodes with ``json.loads``, which takes NaN, Infinity and lone surrogates, none
    of them JSON (RFC 8259); orjson refuses them, so it decides what is JSON here."""
    if not body.strip() or not json_typed(Headers(scope=scope).get("content-type")):
        return None
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return "the request body is not valid JSON"
    return None


def client_address(scope: Scope) -> str:
    """The peer as the server saw it (behind a proxy, what uvicorn's --forwarded-allow-ips
    lets it believe)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


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
