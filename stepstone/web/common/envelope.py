"""The v4 envelope around every answer, success or error.

The Python SDK reads only the HTTP status and ``result``; wrangler reads only ``success`` and
``result``. So both are always sent, errors carry ``[{code, message}]`` and are JSON whatever
the ``Accept`` header says, and a success is never an empty 204.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from stepstone.errors import InvalidAction, StepstoneError
from stepstone.model.records import Conflict

# A 409 is a status that cannot change by retrying; the SDK would otherwise retry it twice.
NO_RETRY = {"x-should-retry": "false"}


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def ok(result: Any, result_info: dict[str, Any] | None = None) -> JSONBody:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return JSONBody(body)


def page_info(count: int, per_page: int, total: int, page: int) -> dict[str, Any]:
    return {
        "count": count,
        "per_page": per_page,
        "total_count": total,
        "page": page,
        "total_pages": (total + per_page - 1) // per_page if per_page else 0,
    }


def error_body(code: int, message: str, detail: str | None) -> dict[str, Any]:
    """``errors[0].message`` is Cloudflare's ``workflows.api.error.<key>``; the human detail
    goes to ``messages`` (which wrangler prints too) so the key stays machine-matchable."""
    messages = [] if not detail or detail == message else [{"code": code, "message": detail}]
    return {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": messages,
        "result": None,
    }


def error(exc: StepstoneError) -> JSONBody:
    headers = NO_RETRY if exc.http_status == 409 else None
    return JSONBody(
        error_body(exc.code, exc.message, exc.detail), status_code=exc.http_status, headers=headers
    )


def expected_failure(exc: Exception) -> JSONBody | None:
    """The answer to an error the API raises on purpose (or a storage conflict, which is a
    request that lost a race); None for anything else, which is a bug."""
    if isinstance(exc, StepstoneError):
        return error(exc)
    if isinstance(exc, Conflict):
        return error(InvalidAction(str(exc)))
    return None
