"""The requests clients repeat, answered without FastAPI's routing, injection and validation.

A caller waiting for an instance creates it and then polls it; a step's output is fetched once
per request. Through FastAPI each of these costs about as much again as its handler, on the
event loop the in-process worker needs too.

The routes stay declared in ``routes/instances.py`` (the OpenAPI document, and every request
this path declines) and both paths answer with the same functions there. This one only takes
a request in its plain form: a query value FastAPI would refuse or have to coerce, a repeated
key, a body that is not a JSON object sent as ``application/json`` or that the model refuses,
or a path an earlier route claims goes on to FastAPI, so bad input is refused in FastAPI's own
words. It runs inside the Guard, so credentials, permissions, the body's size and encoded
slashes are settled before it looks.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from stepstone.ops import Operations
from stepstone.web.api.routes import instances
from stepstone.web.api.schemas import InstanceCreate
from stepstone.web.common.envelope import expected_failure
from stepstone.web.common.guard import replay, segment


@dataclass(frozen=True, slots=True)
class Plain:
    """A request as a reader sees it: path parameters (as meant), query, body."""

    where: tuple[str, ...]
    query: QueryParams
    body: bytes


# A reader turns a request into its answer's coroutine, or None to decline it.
Reader = Callable[[Operations, Plain], Awaitable[Response] | None]


def _instance(ops: Operations, request: Plain) -> Awaitable[Response] | None:
    order = request.query.get("order", "asc")
    simple = request.query.get("simple", "false")
    if order not in ("asc", "desc") or simple not in ("true", "false"):
        return None
    account, workflow, instance = request.where
    return instances.instance_answer(
        ops, account, workflow, instance, order=order, simple=simple == "true"
    )


def _step(ops: Operations, request: Plain) -> Awaitable[Response] | None:
    name = request.query.get("name")
    kind = request.query.get("type")
    raw_attempt = request.query.get("attempt")
    if name is None or not 1 <= len(name) <= instances.STEP_NAME_MAX:
        return None
    if kind not in ("step", "waitForEvent"):
        return None
    attempt = None
    if raw_attempt is not None:
        # Only the canonical spelling: pydantic's lax parsing of the others is FastAPI's call.
        if not (raw_attempt.isascii() and raw_attempt.isdigit()) or raw_attempt[0] == "0":
            return None
        if len(raw_attempt) > 9:
            return None
        attempt = int(raw_attempt)
    account, workflow, instance = request.where
    return instances.step_answer(
        ops, account, workflow, instance, name=name, kind=kind, attempt=attempt
    )


def _create(ops: Operations, request: Plain) -> Awaitable[Response] | None:
    # The Guard has refused a body orjson cannot read, and json.loads (FastAPI's) reads what
    # remains to the same values.
    try:
        decoded = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(decoded, dict):
        return None
    try:
        body = InstanceCreate.model_validate(decoded)
    except ValidationError:
        return None
    account, workflow = request.where
    return instances.create_answer(ops, account, workflow, body)


@dataclass(frozen=True)
class _Route:
    method: str
    reader: Reader
    # Only a body sent as plain JSON is read here; FastAPI takes any other.
    reads_json: bool = False


ROUTES: dict[Callable[..., Any], _Route] = {
    instances.get_instance: _Route("GET", _instance),
    instances.get_step: _Route("GET", _step),
    instances.create_instance: _Route("POST", _create, reads_json=True),
}


class _Hot:
    def __init__(self, route: APIRoute, spec: _Route, earlier: list[APIRoute]) -> None:
        self.regex = route.path_regex
        self.route = route
        self.spec = spec
        self.earlier = [r.path_regex for r in earlier]


@functools.lru_cache(maxsize=512)
def _query(raw: bytes) -> QueryParams | None:
    """The query string parsed as FastAPI parses it, None if a key repeats. Pollers repeat
    the same query, and parsing costs more than the rest of routing."""
    query = QueryParams(raw)
    return None if len(query) != len(query.multi_items()) else query


class HotReads:
    def __init__(self, app: ASGIApp, *, ops: Operations, routers: Iterable[APIRouter]) -> None:
        """``routers`` in the order the app includes them: a route declared before a hot one
        with the same method (``GET .../instances/terminate``) keeps the paths it matches."""
        self.app = app
        self.ops = ops
        self.hot: dict[str, list[_Hot]] = {}
        seen: dict[str, list[APIRoute]] = {}
        for router in routers:
            for route in router.routes:
                if not isinstance(route, APIRoute):
                    continue
                spec = ROUTES.get(route.endpoint)
                for method in route.methods or ():
                    if spec is not None and spec.method == method:
                        hot = _Hot(route, spec, list(seen.get(method, [])))
                        self.hot.setdefault(method, []).append(hot)
                    seen.setdefault(method, []).append(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer, receive = await self._take(scope, receive)
        if answer is None:
            await self.app(scope, receive, send)
            return
        try:
            response = await answer
        except Exception as exc:
            failure = expected_failure(exc)
            if failure is None:
                raise
            response = failure
        await response(scope, receive, send)

    async def _take(
        self, scope: Scope, receive: Receive
    ) -> tuple[Awaitable[Response] | None, Receive]:
        """The answer's coroutine if this path takes the request, and ``receive`` as it now
        stands (a body read here is replayed to FastAPI)."""
        found = self._match(scope)
        if found is None:
            return None, receive
        hot, where, query = found
        body = b""
        if hot.spec.reads_json:
            content_type = Headers(scope=scope).get("content-type")
            body = await _body(receive)
            receive = replay(body, receive)
            if content_type != "application/json" or not body:
                return None, receive
        return hot.spec.reader(self.ops, Plain(where, query, body)), receive

    def _match(self, scope: Scope) -> tuple[_Hot, tuple[str, ...], QueryParams] | None:
        if scope["type"] != "http" or scope.get("root_path"):
            return None
        candidates = self.hot.get(scope["method"])
        if candidates is None:
            return None
        path: str = scope["path"]
        for hot in candidates:
            match = hot.regex.match(path)
            if match is None:
                continue
            if any(earlier.match(path) for earlier in hot.earlier):
                return None
            query = _query(scope["query_string"])
            if query is None:
                return None
            scope["route"] = hot.route  # the route template the request metrics are labelled by
            return hot, tuple(segment(value) for value in match.groups()), query
        return None


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
