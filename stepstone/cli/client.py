"""The CLI's HTTP client: Cloudflare's v4 envelope over httpx, errors as clean messages.

Like wrangler, success is decided on the envelope's ``success`` and the value is ``result``.
An API error becomes ``ApiError`` with the stable code and the server's human detail (which
Stepstone sends in ``messages``); ``fail`` prints it and exits 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import quote

import typer

from stepstone.cli import render

if TYPE_CHECKING:
    import httpx

URL_ENV = "STEPSTONE_URL"
TOKEN_ENV = "STEPSTONE_API_TOKEN"
ACCOUNT_ENV = "STEPSTONE_ACCOUNT_ID"
DEFAULT_URL = "http://127.0.0.1:8787"
DEFAULT_ACCOUNT = "default"
API_PREFIX = "/client/v4"
# Reads are retried like wrangler's list/describe: a restarting server or a 5xx blip should
# not fail a script.
READ_ATTEMPTS = 3
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

UrlOption = Annotated[
    str,
    typer.Option(
        "--url", envvar=URL_ENV, help="Server root, e.g. http://127.0.0.1:8787.", show_default=True
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar=TOKEN_ENV, help="API token (Bearer).", show_default=False),
]
AccountOption = Annotated[str, typer.Option("--account", envvar=ACCOUNT_ENV, help="Account id.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API result as JSON.")]


class CliError(Exception):
    """A failure to report as ``error: <message>`` with exit code 1."""


class ApiError(CliError):
    """The server answered ``success: false``."""

    def __init__(self, status: int, code: int | None, key: str, detail: str | None) -> None:
        self.status = status
        self.code = code
        self.key = key
        self.detail = detail
        super().__init__(self.describe())

    def describe(self) -> str:
        text = self.detail or humanize_key(self.key) or f"the server answered HTTP {self.status}"
        if self.code is not None:
            text = f"{text} (code {self.code})"
        if self.status == 401 or self.code == 10003:
            text += f"; pass --token or set {TOKEN_ENV}"
        return text


def humanize_key(key: str) -> str:
    """``workflows.api.error.workflow.not_found`` -> ``workflow not found``."""
    prefix = "workflows.api.error."
    if key.startswith(prefix):
        key = key[len(prefix) :]
    return key.replace(".", " ").replace("_", " ").strip()


@dataclass(frozen=True, slots=True)
class Binary:
    """A non-JSON answer (a step's byte-stream output)."""

    content: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Page:
    result: Any
    info: dict[str, Any]


def api_root(url: str) -> str:
    """The v4 base for a server root; a URL that already ends in /client/v4 is kept."""
    root = url.rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--url")
    return root if root.endswith(API_PREFIX) else root + API_PREFIX


def seg(value: str) -> str:
    """One path segment; cron ids hold spaces, '*' and '/', which must stay inside it."""
    return quote(value, safe="")


class Client:
    def __init__(
        self,
        url: str,
        token: str | None,
        account: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # Imported here: httpx is a third of the CLI's start-up, and most commands that never
        # talk HTTP (serve, tokens, --help) should not pay for it.
        import httpx

        self.url = url
        self.account = account
        headers = {"user-agent": "stepstone-cli"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.http = httpx.Client(
            base_url=api_root(url), headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- paths --------------------------------------------------------------------------------

    def workflows(self, name: str | None = None) -> str:
        path = f"/accounts/{seg(self.account)}/workflows"
        return path if name is None else f"{path}/{seg(name)}"

    def instances(self, workflow: str, instance_id: str | None = None) -> str:
        path = f"{self.workflows(workflow)}/instances"
        return path if instance_id is None else f"{path}/{seg(instance_id)}"

    # --- requests -----------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        allow_binary: bool = False,
    ) -> Any:
        """``result`` of a successful call (a ``Binary`` for a non-JSON body when allowed)."""
        page = self.call_page(
            method,
            path,
            params=params,
            json_body=json_body,
            content=content,
            allow_binary=allow_binary,
        )
        return page if isinstance(page, Binary) else page.result

    def call_page(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        allow_binary: bool = False,
    ) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        headers = {}
        if json_body is not None:
            content = json.dumps(json_body).encode()
        if content is not None:
            headers["content-type"] = "application/json"
        import httpx

        attempts = READ_ATTEMPTS if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                response = self.http.request(
                    method, path, params=params, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                if attempt < attempts:
                    time.sleep(0.5 * attempt)
                    continue
                reason = str(exc) or type(exc).__name__
                raise CliError(
                    f"cannot reach the Stepstone server at {self.url} ({reason});"
                    f" start one with `stepstone serve`, or pass --url / set {URL_ENV}"
                ) from None
            if response.status_code in RETRY_STATUSES and attempt < attempts:
                time.sleep(0.5 * attempt)
                continue
            return self._parse(response, allow_binary)
        raise AssertionError("unreachable")

    @staticmethod
    def _parse(response: httpx.Response, allow_binary: bool) -> Page | Binary:
        content_type = response.headers.get("content-type", "")
        if allow_binary and response.is_success and "application/json" not in content_type:
            return Binary(response.content, content_type)
        try:
            body = response.json()
        except ValueError:
            raise CliError(
                f"malformed response from the server (HTTP {response.status_code},"
                f" {content_type or 'no content type'})"
            ) from None
        if not isinstance(body, dict):
            raise CliError(f"malformed response from the server (HTTP {response.status_code})")
        if body.get("success") is True:
            return Page(body.get("result"), body.get("result_info") or {})
        errors = body.get("errors") or [{}]
        first = errors[0] if isinstance(errors[0], dict) else {}
        messages = [m.get("message") for m in body.get("messages") or [] if isinstance(m, dict)]
        detail = next((m for m in messages if m), None)
        code = first.get("code")
        raise ApiError(
            response.status_code,
            code if isinstance(code, int) else None,
            str(first.get("message") or ""),
            detail,
        )

    # --- wrangler's helpers -------------------------------------------------------------------

    def resolve(self, workflow: str, instance_id: str) -> str:
        """``latest`` is the instance with the greatest ``created_on``, as in wrangler."""
        if instance_id != "latest":
            return instance_id
        found = self.call("GET", self.instances(workflow)) or []
        if not found:
            raise CliError(f"workflow {workflow!r} has no instances, so there is no 'latest'")
        newest = max(found, key=lambda i: str(i.get("created_on") or ""))
        return str(newest["id"])


@contextmanager
def connect(url: str, token: str | None, account: str) -> Iterator[Client]:
    """A client whose failures end the command with a clean message and exit code 1."""
    client = Client(url, token, account)
    try:
        yield client
    except CliError as exc:
        fail(str(exc))
    finally:
        client.close()


def fail(message: str, code: int = 1) -> NoReturn:
    render.error(message)
    raise typer.Exit(code)


def usage(message: str, param: str | None = None) -> NoReturn:
    """A usage error: click prints it with the usage line and exits 2."""
    raise typer.BadParameter(message, param_hint=param)


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        usage(f"not valid JSON ({exc})", what)
