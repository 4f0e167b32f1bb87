"""A NUL character (U+0000) in a URL or in a body's free-text field is a 400 on every backend.

PostgreSQL text cannot hold one: these lookups and writes were server errors there (and two
reset the connection) while SQLite answered. Payloads keep it: they are stored as bytes.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import ACCOUNT, LiveServer

WF = f"/accounts/{ACCOUNT}/workflows"
URLS = [
    "/accounts/acc%00x/workflows",
    "/accounts/acc%00x/workflows/echo/instances",
    f"{WF}?search=e%00",
    f"{WF}/echo/instances/e1/step?name=x%00&type=step",
    f"{WF}/echo/stepstone/hooks/deliveries?hook=h%00",
    f"/accounts/{ACCOUNT}/stepstone/audit?action=pause%00",
]
BODIES: list[tuple[str, dict[str, Any]]] = [
    (
        f"{WF}/echo/stepstone/hooks",
        {"url": "http://example.com/x", "events": ["errored"], "secret": "s" * 16 + "\x00"},
    ),
    (f"{WF}/echo/stepstone/bulk", {"action": "pause", "filter": {"id_prefix": "e\x00"}}),
    (f"{WF}/echo/stepstone/bulk", {"action": "pause", "filter": {"error_name": "E\x00"}}),
]


def _refused(answer: httpx.Response) -> None:
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["success"] is False and body["errors"][0]["code"] == 10002, body


def test_a_nul_in_a_url_or_a_text_field_is_refused_alike(server: LiveServer) -> None:
    server.register("echo", "Echo")
    with server.http() as http:
        created = http.post(f"{WF}/echo/instances", json={"instance_id": "e1", "params": "\x00"})
        assert created.status_code == 200, created.text
        server.wait_done("echo", "e1")
        for url in URLS:
            _refused(http.get(url))
        for url, body in BODIES:
            _refused(http.post(url, json=body))
        # Nothing was written, and what was stored reads back whole.
        assert http.get(f"{WF}/echo/stepstone/hooks").json()["result"] == []
        assert http.get(f"{WF}/echo/instances/e1").json()["result"]["params"] == "\x00"
        assert http.get(f"{WF}/echo/stepstone/bulk").json()["result"] == []
