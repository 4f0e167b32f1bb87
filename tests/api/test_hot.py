"""GET instance, GET step and POST instances answer the same through ``stepstone.web.api.hot`` as
through FastAPI.

A test header the spy below honours (GETs) or a content-type with a charset (which FastAPI
reads as JSON) makes the hot path decline, so each request is sent down each path and the two
answers must match byte for byte. (A repeated query key no longer serves: the Guard refuses it.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from stepstone.web.api import hot
from tests.api.conftest import ACCOUNT, LiveServer

WF = f"/accounts/{ACCOUNT}/workflows"
FORCE_FASTAPI = {"x-test-force-fastapi": "1"}
STEP = f"{WF}/tour/instances/t1/step"
CASES: list[tuple[str, dict[str, Any]]] = [
    (f"{WF}/tour/instances/t1", {}),
    (f"{WF}/tour/instances/t1", {"order": "desc"}),
    (f"{WF}/tour/instances/t1", {"simple": "true", "order": "asc"}),
    (STEP, {"name": "flaky-1", "type": "step"}),
    (STEP, {"name": "flaky-1", "type": "step", "attempt": "1"}),
    (STEP, {"name": "flaky-1", "type": "step", "attempt": "2"}),
    (STEP, {"name": "flaky-1", "type": "step", "attempt": "3"}),
    (STEP, {"name": "secret-1", "type": "step"}),
    (STEP, {"name": "blob-1", "type": "step"}),
    (STEP, {"name": "approval-1", "type": "waitForEvent"}),
    (STEP, {"name": "approval-1", "type": "step"}),
    (STEP, {"name": "nope-1", "type": "step"}),
    (f"{WF}/tour/instances/nope", {}),
    (f"{WF}/tour/instances/nope/step", {"name": "flaky-1", "type": "step"}),
    (f"{WF}/nope/instances/t1", {}),
    (f"{WF}/nope/instances/t1/step", {"name": "flaky-1", "type": "step"}),
    (f"{WF}/tour/instances/bad%20id", {}),
    (f"{WF}/to%2Fur/instances/t1", {}),
]


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths the hot path answered."""
    paths: list[str] = []
    original = hot.HotReads._take

    async def spy(self: hot.HotReads, scope: Any, receive: Any) -> Any:
        if (b"x-test-force-fastapi", b"1") in scope["headers"]:
            return None, receive
        answer, receive = await original(self, scope, receive)
        if answer is not None:
            paths.append(scope["path"])
        return answer, receive

    monkeypatch.setattr(hot.HotReads, "_take", spy)
    yield paths


def _tour(server: LiveServer) -> None:
    server.register("tour", "Tour")
    with server.http() as http:
        answer = http.post(f"{WF}/tour/instances", json={"instance_id": "t1"})
        assert answer.status_code == 200, answer.text
    server.wait_step("tour", "t1", "approval-1")


def test_hot_answers_match_fastapi_byte_for_byte(server: LiveServer, taken: list[str]) -> None:
    _tour(server)
    with server.http() as http:
        for path, params in CASES:
            taken.clear()
            fast = http.get(path, params=params)
            assert taken, (path, params)
            taken.clear()
            slow = http.get(path, params=params, headers=FORCE_FASTAPI)
            assert not taken, (path, params)
            assert fast.status_code == slow.status_code, (path, params)
            assert fast.content == slow.content, (path, params)
            fast_headers = {k: v for k, v in fast.headers.items() if k != "date"}
            assert fast_headers == {k: v for k, v in slow.headers.items() if k != "date"}


def test_a_repeated_key_is_refused_before_the_hot_path(
    server: LiveServer, taken: list[str]
) -> None:
    _tour(server)
    taken.clear()
    with server.http() as http:
        for path, params in CASES[:4]:
            answer = http.get(path, params=[*params.items(), ("unused", "1"), ("unused", "2")])
            assert answer.status_code == 400, (path, answer.text)
            assert "'unused' is given more than once" in answer.text
        assert taken == []


def test_unusual_parameters_go_to_fastapi(server: LiveServer, taken: list[str]) -> None:
    _tour(server)
    taken.clear()
    with server.http() as http:
        declined = [
            (STEP, {"name": "flaky-1", "type": "step", "attempt": "01"}),
            (STEP, {"name": "flaky-1", "type": "step", "attempt": "0"}),
            (STEP, {"name": "flaky-1", "type": "sleep"}),
            (STEP, {"name": "", "type": "step"}),
            (STEP, {"type": "step"}),
            (f"{WF}/tour/instances/t1", {"order": "sideways"}),
            (f"{WF}/tour/instances/t1", {"simple": "1"}),
        ]
        for path, params in declined:
            answer = http.get(path, params=params)
            assert answer.status_code in (200, 400), (path, params, answer.text)
        assert taken == []
        # A fixed route declared before the instance route keeps its path.
        terminate = http.get(f"{WF}/tour/instances/terminate")
        assert terminate.json()["result"] == {"status": "not_running"}
        assert taken == []
        # Not a GET: FastAPI answers (405), as it would for any route.
        assert http.post(f"{WF}/tour/instances/t1/step").status_code == 405
        assert taken == []


def test_hot_creates_match_fastapi(server: LiveServer, taken: list[str]) -> None:
    server.register("echo", "Echo")
    created = f"{WF}/echo/instances"
    plain = {"content-type": "application/json"}
    # FastAPI reads this as JSON too; the hot path takes only the plain spelling.
    other = {"content-type": "application/json; charset=utf-8"}
    bodies: list[dict[str, Any]] = [
        {"params": {"a": [1, 2.5, None, "x"]}},
        {"params": '{"typed": "sdk"}'},
        {"params": "not json"},
        {"instance_retention": {"success_retention": "1 day"}},
        {"location_hint": "enam", "unknown": True},
        {},
    ]
    with server.http() as http:
        for n, body in enumerate(bodies):
            answers = []
            for headers, suffix in ((plain, "fast"), (other, "slow")):
                taken.clear()
                sent = {**body, "instance_id": f"c{n}-{suffix}"}
                answer = http.post(created, content=orjson.dumps(sent), headers=headers)
                assert bool(taken) == (suffix == "fast"), body
                assert answer.status_code == 200, answer.text
                result = answer.json()["result"]
                assert result.pop("id") == f"c{n}-{suffix}"
                details = http.get(f"{created}/c{n}-{suffix}").json()["result"]
                answers.append((result, details["params"]))
            assert answers[0] == answers[1], body
        refused: list[tuple[str, bytes]] = [
            (created, orjson.dumps({"instance_id": "c0-fast"})),  # exists: 409
            (created, orjson.dumps({"instance_id": "bad id"})),
            (f"{WF}/nope/instances", orjson.dumps({"instance_id": "z"})),
            (f"{WF}/n%2Fpe/instances", orjson.dumps({"instance_id": "z"})),
        ]
        for path, content in refused:
            taken.clear()
            fast = http.post(path, content=content, headers=plain)
            assert taken, path
            slow = http.post(path, content=content, headers=other)
            assert fast.status_code == slow.status_code >= 400, (path, fast.text)
            assert fast.content == slow.content
            fast_headers = {k: v for k, v in fast.headers.items() if k != "date"}
            assert fast_headers == {k: v for k, v in slow.headers.items() if k != "date"}
        # The model refuses it, or it is not a JSON object: FastAPI answers.
        taken.clear()
        for content in (b'{"instance_id": 5}', b"[]", b"null", b'{"params": NaN}', b"{"):
            answer = http.post(created, content=content, headers=plain)
            assert answer.status_code in (200, 400), (content, answer.text)
        assert taken == []
