"""The ``workers`` module as Stepstone supplies it to Cloudflare Python projects.

Names and signatures follow Cloudflare's Python Workers SDK; outside Pyodide there is no
JavaScript to convert to or from, so ``python_from_rpc``, ``python_to_rpc`` and ``to_js`` hand
values back unchanged and ``handler`` leaves its function as it is.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http import HTTPMethod, HTTPStatus
from typing import Any, TypeVar

from stepstone.authoring.entrypoint import WorkflowEntrypoint
from stepstone.errors import NonRetryableError

__all__ = [
    "Context",
    "DurableObject",
    "NonRetryableError",
    "Request",
    "Response",
    "WorkerEntrypoint",
    "WorkflowEntrypoint",
    "fetch",
    "handler",
    "import_from_javascript",
    "python_from_rpc",
    "python_to_rpc",
]

Headers = Mapping[str, str] | Iterable[tuple[str, str]] | http.client.HTTPMessage | None
F = TypeVar("F", bound=Callable[..., Any])


def _header_pairs(headers: Headers) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, http.client.HTTPMessage):
        return [(k, v) for k, v in headers.items()]
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


def _message(pairs: Iterable[tuple[str, str]]) -> http.client.HTTPMessage:
    # What workerd's SDK returns for headers: case-insensitive, repeated names kept.
    message = http.client.HTTPMessage()
    for key, value in pairs:
        message[key] = value.strip()
    return message


def _encode(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"Unsupported type in Response: {type(body).__name__}")


class _Body:
    """``text()``, ``bytes()``, ``json()`` over a body read once."""

    _content: bytes
    body_used: bool

    def _take(self) -> bytes:
        if self.body_used:
            raise OSError("Body already used")
        self.body_used = True
        return self._content

    async def bytes(self) -> bytes:
        return self._take()

    async def text(self) -> str:
        return self._take().decode()


class Request(_Body):
    """An HTTP request as a Worker's ``fetch`` receives it (and as ``fetch()`` takes it)."""

    _method: str
    _url: str

    def __init__(
        self,
        input: str | Request,
        *,
        method: str | HTTPMethod | None = None,
        headers: Headers = None,
        body: str | bytes | None = None,
    ) -> None:
        if isinstance(input, Request):
            self._method = input._method
            self._url = input.url
            pairs = list(input.headers.items())
            self._content = input._content
        else:
            self._method, self._url, pairs, self._content = "GET", str(input), [], b""
        if method is not None:
            self._method = str(method.value if isinstance(method, HTTPMethod) else method).upper()
        if headers is not None:
            pairs = _header_pairs(headers)
        if body is not None:
            self._content = _encode(body)
        self._headers = _message(pairs)
        self.body_used = False

    def __repr__(self) -> str:
        return f"Request(method={self._method!r}, url={self._url!r})"

    @property
    def method(self) -> HTTPMethod | str:
        try:
            method: HTTPMethod = HTTPMethod[self._method]
        except KeyError:
            return self._method
        return method

    @property
    def url(self) -> str:
        return self._url

    @property
    def headers(self) -> http.client.HTTPMessage:
        return self._headers

    async def json(self, **kwargs: Any) -> Any:
        return json.loads(await self.text(), **kwargs)

    def clone(self) -> Request:
        if self.body_used:
            raise OSError("Body already used")
        return Request(self)


class _JsonMethod:
    """``Response.json(data, ...)`` builds a JSON response; ``response.json()`` parses one.

    Both spellings exist in Cloudflare's SDK, under the one name.
    """

    def __get__(self, obj: Response | None, owner: type[Response]) -> Callable[..., Any]:
        if obj is None:
            return owner.from_json
        return obj._parse_json


class Response(_Body):
    """An HTTP response: what a Worker's ``fetch`` returns, and what ``fetch()`` gives back."""

    json = _JsonMethod()

    def __init__(
        self,
        body: str | bytes | None = None,
        status: HTTPStatus | int | None = None,
        status_text: str = "",
        headers: Headers = None,
    ) -> None:
        self._content = _encode(body)
        code = int(status) if status is not None else 200
        if not 200 <= code <= 599:
            raise ValueError(f"Responses may only be constructed with status codes 200-599: {code}")
        self.status = code
        self.status_text = status_text or _reason(code)
        pairs = _header_pairs(headers)
        if isinstance(body, str) and not any(k.lower() == "content-type" for k, _ in pairs):
            pairs.append(("content-type", "text/plain;charset=UTF-8"))
        self.headers = _message(pairs)
        self.url = ""
        self.body_used = False

    def __repr__(self) -> str:
        return f"Response(status={self.status})"

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    async def _parse_json(self, **kwargs: Any) -> Any:
        return json.loads(await self.text(), **kwargs)

    @staticmethod
    def from_json(
        data: Any,
        status: HTTPStatus | int = HTTPStatus.OK,
        status_text: str = "",
        headers: Headers = None,
    ) -> Response:
        pairs = _header_pairs(headers)
        if not any(k.lower() == "content-type" for k, _ in pairs):
            pairs.append(("content-type", "application/json"))
        return Response(json.dumps(data), status, status_text, pairs)

    @staticmethod
    def redirect(url: str, status: HTTPStatus | int = HTTPStatus.FOUND) -> Response:
        code = int(status)
        if code not in (301, 302, 303, 307, 308):
            raise ValueError(f"Invalid redirect status code {code}")
        return Response(None, code, headers={"location": url})


def _reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


async def fetch(
    resource: str | Request,
    *,
    method: str | HTTPMethod | None = None,
    headers: Headers = None,
    body: str | bytes | None = None,
    redirect: str | None = None,
    **_ignored: Any,
) -> Response:
    """Fetch over HTTP (httpx); ``cf`` and other Cloudflare-only options are accepted and
    ignored. ``redirect="manual"`` returns redirects instead of following them."""
    request = Request(resource, method=method, headers=headers, body=body)
    # Imported here: every process that loads workflow modules imports this module, and
    # httpx is most of its start-up cost; only a Worker that fetches needs it.
    import httpx

    async with httpx.AsyncClient(follow_redirects=redirect != "manual") as client:
        answer = await client.request(
            request._method,
            request.url,
            headers=list(request.headers.items()),
            content=request._content or None,
        )
    response = Response(answer.content, answer.status_code, answer.reason_phrase)
    response.headers = _message(answer.headers.multi_items())
    response.url = str(answer.url)
    return response


def handler(func: F) -> F:
    """Cloudflare's wrapper converts JavaScript arguments; here they are Python already."""
    return func


def python_from_rpc(value: Any) -> Any:
    return value


def python_to_rpc(value: Any) -> Any:
    return value


def import_from_javascript(module_name: str) -> Any:
    raise ImportError(
        f"import_from_javascript({module_name!r}): there is no JavaScript runtime under"
        " Stepstone; Workers bindings other than Workflows, vars and secrets are not available"
    )


class Context:
    """A Worker's ``ctx``: ``wait_until`` keeps work going after the response is sent."""

    def __init__(self, wait_until: Callable[[Awaitable[Any]], None]) -> None:
        self._wait_until = wait_until

    def wait_until(self, awaitable: Awaitable[Any]) -> None:
        self._wait_until(awaitable)

    # Cloudflare's spelling (the JavaScript name, which Python Workers code uses too).
    waitUntil = wait_until

    def pass_through_on_exception(self) -> None:
        """Nothing to pass through to: an exception answers 500."""

    passThroughOnException = pass_through_on_exception


class WorkerEntrypoint:
    """Base class of a Worker: ``async def fetch(self, request)``, optionally
    ``async def scheduled(self, controller, env, ctx)``."""

    def __init__(self, ctx: Any = None, env: Any = None) -> None:
        self.ctx = ctx
        self.env = env


class DurableObject:
    """Importable so that a module defining one still loads; Stepstone cannot run it."""

    def __init__(self, ctx: Any = None, env: Any = None) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} is a Durable Object; Stepstone runs Workflows and the"
            " Worker's fetch and scheduled handlers, not Durable Objects"
        )
