"""The approval page (a Stepstone extension) at ``/stepstone/approve/<token>``.

Served around the API's Guard: the signed, single-use token in the path is the credential, so
the person approving needs no API token. GET shows what is being approved and by which
workflow; POST (the page's form: ``decision`` approve or reject, an optional ``comment``) sends
the event once. Nothing under ``/client/v4`` changes.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from stepstone.model.records import ApprovalLinkRecord
from stepstone.ops import Operations, approvals
from stepstone.ops.approvals import Refused

MAX_FORM_BYTES = 16 * 1024
# The token is in the URL: no referrer may carry it off, no cache keep the page.
HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}


class ApprovalPages:
    """ASGI middleware answering the approval paths and passing everything else on."""

    def __init__(self, app: ASGIApp, ops: Operations) -> None:
        self.app = app
        self.ops = ops

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(approvals.PREFIX):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        response = await self._answer(request, path[len(approvals.PREFIX) :])
        await response(scope, receive, send)

    async def _answer(self, request: Request, token: str) -> Response:
        ops = self.ops
        now = ops.now()
        if request.method not in ("GET", "HEAD", "POST"):
            return _page(405, "Not allowed", "<p>Open the link, or submit its form.</p>")
        try:
            if request.method == "POST":
                body = await request.body()
                if len(body) > MAX_FORM_BYTES:
                    raise Refused(413, "too-large", "The form is too large.")
                form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
                decision = (form.get("decision") or [""])[0]
                comment = (form.get("comment") or [""])[0].strip() or None
                link = await approvals.submit(ops, token, decision, comment, now)
                done = "approved" if decision == "approve" else "rejected"
                return _page(200, f"Thank you: {done}", _summary(link) + _sent(done, comment))
            link = await approvals.open_link(ops, token, now)
        except Refused as refused:
            return _page(refused.status, "This link cannot be used", _p(refused.message))
        return _page(200, link.title or "Approval requested", _summary(link) + _form())


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _summary(link: ApprovalLinkRecord) -> str:
    rows = [
        ("Workflow", link.workflow),
        ("Instance", link.instance_id),
        ("Event sent", link.event_type),
        ("Link expires", _when(link.expires_at)),
    ]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _form() -> str:
    return (
        '<form method="post">'
        '<label for="comment">Comment (optional)</label>'
        f'<textarea id="comment" name="comment" maxlength="{approvals.MAX_COMMENT}"></textarea>'
        '<button name="decision" value="approve">Approve</button> '
        '<button name="decision" value="reject">Reject</button>'
        "</form><p>The link works once.</p>"
    )


def _sent(done: str, comment: str | None) -> str:
    said = f" with your comment: “{html.escape(comment)}”" if comment else ""
    return f"<p>The workflow was told it is {done}{said}. This link no longer works.</p>"


def _when(ms: int) -> str:
    from stepstone.views import iso

    return iso(ms) or ""


def _page(status: int, title: str, body: str) -> HTMLResponse:
    escaped = html.escape(title)
    text = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escaped}</title><style>"
        "body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem}"
        "th{text-align:left;padding-right:1rem}textarea{display:block;width:100%;min-height:5rem;"
        "margin:.3rem 0 1rem}button{font-size:1rem;padding:.4rem 1.2rem}"
        f"</style></head><body><h1>{escaped}</h1>{body}</body></html>"
    )
    return HTMLResponse(text, status_code=status, headers=HEADERS)
