"""GET instance and GET step answer the same through ``stepstone.api.hot`` as through FastAPI.

A repeated query key makes the hot path decline (FastAPI ignores the unknown key), so each
request is sent twice, once down each path, and the two answers must match byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stepstone.api import hot
from tests.api.conftest import ACCOUNT, LiveServer

WF = f"/accounts/{ACCOUNT}/workflows"
FORCE_FASTAPI = [("unused", "1"), ("unused", "2")]
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

    def spy(self: hot.HotReads, scope: Any) -> Any:
        answer = original(self, scope)
        if answer is not None:
            paths.append(scope["path"])
        return answer

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
            slow = http.get(path, params=[*params.items(), *FORCE_FASTAPI])
            assert not taken, (path, params)
            assert fast.status_code == slow.status_code, (path, params)
            assert fast.content == slow.content, (path, params)
            fast_headers = {k: v for k, v in fast.headers.items() if k != "date"}
            assert fast_headers == {k: v for k, v in slow.headers.items() if k != "date"}


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
