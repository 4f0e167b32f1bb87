"""GET instance and GET step, answered without FastAPI's routing, injection and validation.

These are the requests clients repeat: a caller waiting for an instance polls it, and a step's
output is fetched once per request. Through FastAPI each costs about twice what its handler
does, on the event loop the in-process worker needs too.

The routes stay declared in ``routes/instances.py`` (the OpenAPI document, and every request
this path declines) and both paths answer with the same functions there. This one only takes
a request whose query string is in its plain form: a value FastAPI would refuse or have to
coerce, a repeated key, or a path an earlier GET route claims goes on to FastAPI, so bad input
is refused in FastAPI's own words. It runs inside the Guard, so credentials, permissions and
encoded slashes are settled before it looks.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from stepstone.api.envelope import expected_failure
from stepstone.api.guard import segment
from stepstone.api.routes import instances
from stepstone.embedded import Engine
from stepstone.ops import Operations

Where = tuple[str, str, str]
# A reader turns the query string into the answer's coroutine, or None to decline.
Reader = Callable[[Operations, Where, QueryParams], Awaitable[Response] | None]


def _instance(ops: Operations, where: Where, query: QueryParams) -> Awaitable[Response] | None:
    order = query.get("order", "asc")
    simple = query.get("simple", "false")
    if order not in ("asc", "desc") or simple not in ("true", "false"):
        return None
    return instances.instance_answer(ops, *where, order=order, simple=simple == "true")


def _step(ops: Operations, where: Where, query: QueryParams) -> Awaitable[Response] | None:
    name = query.get("name")
    kind = query.get("type")
    raw_attempt = query.get("attempt")
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
    return instances.step_answer(ops, *where, name=name, kind=kind, attempt=attempt)


READERS: dict[Callable[..., Any], Reader] = {
    instances.get_instance: _instance,
    instances.get_step: _step,
}


@functools.lru_cache(maxsize=512)
def _query(raw: bytes) -> QueryParams | None:
    """The query string parsed as FastAPI parses it, None if a key repeats. Pollers repeat
    the same query, and parsing costs more than the rest of routing."""
    query = QueryParams(raw)
    return None if len(query) != len(query.multi_items()) else query


class _Hot:
    def __init__(self, route: APIRoute, reader: Reader, earlier: list[APIRoute]) -> None:
        self.regex = route.path_regex
        self.reader = reader
        self.earlier = [r.path_regex for r in earlier]


class HotReads:
    def __init__(self, app: ASGIApp, *, engine: Engine, routers: Iterable[APIRouter]) -> None:
        """``routers`` in the order the app includes them: a GET route before a hot one
        (``.../instances/terminate``) keeps the paths it matches."""
        self.app = app
        self.engine = engine
        self.hot: list[_Hot] = []
        seen: list[APIRoute] = []
        for router in routers:
            for route in router.routes:
                if not isinstance(route, APIRoute) or "GET" not in (route.methods or ()):
                    continue
                reader = READERS.get(route.endpoint)
                if reader is not None:
                    self.hot.append(_Hot(route, reader, list(seen)))
                seen.append(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = self._take(scope)
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

    def _take(self, scope: Scope) -> Awaitable[Response] | None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        for hot in self.hot:
            match = hot.regex.match(path)
            if match is None:
                continue
            if any(earlier.match(path) for earlier in hot.earlier):
                return None
            query = _query(scope["query_string"])
            if query is None:
                return None
            where = (
                segment(match["account_id"]),
                segment(match["workflow_name"]),
                segment(match["instance_id"]),
            )
            return hot.reader(self.engine.ops, where, query)
        return None
