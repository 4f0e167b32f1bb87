"""Bad input found since test_bad_input.py: huge pages, non-JSON numbers, lax booleans and
repeated query keys. Each is a 400 envelope on the hot path and on FastAPI's, nothing stored
changes, and what the official clients send still works."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import ACCOUNT, FLOWS, LiveServer
from tests.api.test_bad_input import _expect, _snapshot

WF = f"/accounts/{ACCOUNT}/workflows"
HUGE = "100000000000000000000"

CASES: list[tuple[str, str, Any, str]] = [
    # Pages past any store offset: an OverflowError (500) before.
    ("GET", f"{WF}?page={HUGE}", None, "query.page"),
    ("GET", f"{WF}/echo/instances?page={HUGE}", None, "query.page"),
    ("GET", f"{WF}/echo/versions?page={HUGE}", None, "query.page"),
    ("GET", f"/accounts?page={HUGE}", None, "query.page"),
    ("GET", f"/memberships?page={HUGE}", None, "query.page"),
    # NaN and Infinity are not JSON; json.loads took them and they were stored as null.
    ("POST", f"{WF}/echo/instances", b'{"instance_id": "n1", "params": NaN}', "not valid JSON"),
    ("POST", f"{WF}/echo/instances", b'{"instance_id": "n2", "params": Infinity}', "not valid"),
    ("POST", f"{WF}/echo/instances", b'{"instance_id": "n3", "params": [-Infinity]}', "not val"),
    ("POST", f"{WF}/echo/instances/batch", b'[{"instance_id": "n4", "params": NaN}]', "not v"),
    ("POST", f"{WF}/echo/instances", b'{"instance_id": "n5", "params": "\\ud800"}', "not vali"),
    ("POST", f"{WF}/echo/instances/e1/events/go", b"NaN", "not valid JSON"),
    (
        "PUT",
        f"{WF}/echo",
        b'{"class_name": "Echo", "script_name": "%s", "limits": {"steps": Infinity}}'
        % FLOWS.encode(),
        "not valid JSON",
    ),
    # Booleans and integers are JSON's own, not their spellings.
    (
        "PATCH",
        f"{WF}/waiter/instances/r1/status",
        {"status": "terminate", "rollback": "yes"},
        "rol",
    ),
    ("PATCH", f"{WF}/waiter/instances/r1/status", {"status": "terminate", "rollback": 1}, "rollb"),
    (
        "PATCH",
        f"{WF}/waiter/instances/r1/status",
        {"status": "restart", "from": {"name": "echo", "count": "2"}},
        "from.count",
    ),
    (
        "PUT",
        f"{WF}/echo",
        {"class_name": "Echo", "script_name": FLOWS, "limits": {"steps": "5"}},
        "limits.steps",
    ),
    # A repeated singular parameter: one value was silently chosen.
    ("GET", f"{WF}/echo/instances?status=complete&status=errored", None, "'status'"),
    ("GET", f"{WF}?per_page=5&per_page=6", None, "'per_page'"),
    ("GET", f"{WF}/echo/instances/e1?order=asc&order=desc", None, "'order'"),
    ("GET", f"{WF}/echo/instances/e1/step?name=echo-1&type=step&name=x", None, "'name'"),
    ("PUT", f"{WF}/echo/instances/terminate?status=queued&status=running", None, "'status'"),
    ("POST", f"{WF}/echo/instances?x=1&x=2", {"instance_id": "q1"}, "'x'"),
]


@pytest.fixture
def seeded(server: LiveServer) -> LiveServer:
    server.register("echo", "Echo")
    server.register("waiter", "Waiter")
    with server.http() as http:
        http.post(f"{WF}/echo/instances", json={"instance_id": "e1"})
        # r1 waits for an event, so an accepted terminate would change it.
        http.post(f"{WF}/waiter/instances", json={"instance_id": "r1"})
    server.wait_done("echo", "e1")
    server.wait_status("waiter", "r1", {"waiting"})
    return server


def test_each_case_is_a_400_and_changes_nothing(seeded: LiveServer) -> None:
    with seeded.http() as http:
        before = _snapshot(http)
        for method, path, body, words in CASES:
            if isinstance(body, bytes):
                answer = http.request(
                    method, path, content=body, headers={"content-type": "application/json"}
                )
            elif body is None:
                answer = http.request(method, path)
            else:
                answer = http.request(method, path, json=body)
            _expect(answer, 400, 10002, words)
        assert _snapshot(http) == before
        assert http.get(f"{WF}/waiter/instances/r1").json()["result"]["status"] == "waiting"
        for instance_id in ("n1", "n2", "n3", "n4", "n5", "q1"):
            missing = http.get(f"{WF}/echo/instances/{instance_id}")
            assert missing.status_code == 404, instance_id


def test_json_typed_bodies_only_are_checked_as_json(seeded: LiveServer) -> None:
    """``application/*+json`` and a body with no type are JSON to FastAPI, so to the check."""
    with seeded.http() as http:
        for content_type in ("application/merge-patch+json", "application/json; charset=utf-8"):
            answer = http.post(
                f"{WF}/echo/instances",
                content=b'{"params": NaN}',
                headers={"content-type": content_type},
            )
            _expect(answer, 400, 10002, "not valid JSON")
        untyped = http.build_request("POST", f"{WF}/echo/instances", content=b'{"params": NaN}')
        assert "content-type" not in untyped.headers
        _expect(http.send(untyped), 400, 10002, "not valid JSON")


def test_strict_values_still_work(seeded: LiveServer) -> None:
    """What the SDK and wrangler send: a real boolean, a real integer, ``params`` as a
    JSON-encoded string, a single page number."""
    with seeded.http() as http:
        listed = http.get(f"{WF}/echo/instances", params={"page": 1, "per_page": 10})
        assert listed.status_code == 200, listed.text
        put = http.put(
            f"{WF}/echo",
            json={"class_name": "Echo", "script_name": FLOWS, "limits": {"steps": 5}},
        )
        assert put.status_code == 200, put.text
        created = http.post(f"{WF}/echo/instances", json={"instance_id": "s1", "params": "{}"})
        assert created.status_code == 200, created.text
        stopped = http.patch(
            f"{WF}/waiter/instances/r1/status", json={"status": "terminate", "rollback": False}
        )
        assert stopped.status_code == 200, stopped.text
