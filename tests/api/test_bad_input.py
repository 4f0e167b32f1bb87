"""Bad input: every case answers the envelope with a code and a clear message, and nothing
stored changes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import ACCOUNT, FLOWS, LiveServer

WF = f"/accounts/{ACCOUNT}/workflows"


def _snapshot(http: httpx.Client) -> Any:
    workflows = http.get(WF).json()["result"]
    instances = http.get(f"{WF}/echo/instances").json()["result"]
    versions = http.get(f"{WF}/echo/versions").json()["result"]
    return (
        [(w["name"], w["modified_on"]) for w in workflows],
        sorted(i["id"] for i in instances),
        [v["id"] for v in versions],
    )


def _expect(answer: httpx.Response, status: int, code: int, words: str = "") -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["success"] is False and body["result"] is None
    assert body["errors"][0]["code"] == code, body
    assert body["errors"][0]["message"].startswith("workflows.api.error.")
    if words:
        text = " ".join(m["message"] for m in body["messages"])
        assert words in text, text
    if status == 409:
        assert answer.headers["x-should-retry"] == "false"


CASES: list[tuple[str, str, Any, int, int, str]] = [
    ("POST", f"{WF}/echo/instances", b"{not json", 400, 10002, "not valid JSON"),
    ("PUT", f"{WF}/echo", b'{"class_name": "Echo"', 400, 10002, "not valid JSON"),
    ("PUT", f"{WF}/echo", {"class_name": "Echo"}, 400, 10002, "script_name"),
    ("PUT", f"{WF}/echo", {"class_name": 5, "script_name": FLOWS}, 400, 10002, "class_name"),
    ("PUT", f"{WF}/echo", {"class_name": "Nope", "script_name": FLOWS}, 400, 10202, "Nope"),
    ("PUT", f"{WF}/echo", {"class_name": "X", "script_name": "no.such.mod"}, 400, 10202, ""),
    (
        "PUT",
        f"{WF}/echo",
        {"class_name": "Echo", "script_name": FLOWS, "limits": {"steps": "many"}},
        400,
        10002,
        "limits.steps",
    ),
    (
        "PUT",
        f"{WF}/echo",
        {"class_name": "Echo", "script_name": FLOWS, "schedules": [{"cron": "every day"}]},
        400,
        10202,
        "cron",
    ),
    ("PUT", f"{WF}/bad.name", {"class_name": "Echo", "script_name": FLOWS}, 400, 10201, ""),
    ("PUT", f"{WF}/a%2Fb", {"class_name": "Echo", "script_name": FLOWS}, 400, 10201, "a/b"),
    ("GET", f"{WF}/echo%2Fversions", None, 400, 10201, "echo/versions"),
    ("PUT", f"{WF}/{'x' * 65}", {"class_name": "Echo", "script_name": FLOWS}, 400, 10201, ""),
    ("POST", f"{WF}/echo/instances", {"instance_id": "bad id!"}, 400, 10401, "bad id!"),
    ("POST", f"{WF}/echo/instances", {"instance_id": "x" * 101}, 400, 10401, ""),
    ("POST", f"{WF}/echo/instances", {"instance_id": "cf_" + "a" * 64}, 400, 10401, "reserved"),
    ("POST", f"{WF}/echo/instances", {"instance_id": 12}, 400, 10002, "instance_id"),
    ("POST", f"{WF}/echo/instances", [1, 2], 400, 10002, ""),
    ("POST", f"{WF}/echo/instances/batch", {"instance_id": "x"}, 400, 10002, ""),
    ("POST", f"{WF}/echo/instances/batch", [], 400, 10002, "1 to 100"),
    (
        "POST",
        f"{WF}/echo/instances/batch",
        [{"instance_id": "ok1"}, {"instance_id": "no good"}],
        400,
        10401,
        "",
    ),
    ("POST", f"{WF}/echo/instances/batch", [{}] * 101, 400, 10002, "1 to 100"),
    ("POST", f"{WF}/echo/instances/batch/delete", {"instances": []}, 400, 10002, ""),
    ("POST", f"{WF}/echo/instances/batch/delete", {"instances": ["e1", "bad?"]}, 400, 10401, ""),
    ("PATCH", f"{WF}/echo/instances/e1/status", {"status": "explode"}, 400, 10002, "status"),
    (
        "PATCH",
        f"{WF}/echo/instances/e1/status",
        {"status": "pause", "rollback": True},
        400,
        10002,
        "rollback",
    ),
    (
        "PATCH",
        f"{WF}/echo/instances/e1/status",
        {"status": "restart", "from": {"name": "nope"}},
        400,
        10407,
        "nope",
    ),
    ("PATCH", f"{WF}/echo/instances/e1/status", {"status": "terminate"}, 409, 10406, ""),
    ("PATCH", f"{WF}/echo/instances/e1/status", {"status": "pause"}, 409, 10408, ""),
    ("POST", f"{WF}/echo/instances/e1/events/a.b", {}, 400, 10403, "'.'"),
    ("POST", f"{WF}/echo/instances/e1/events/ok", {}, 409, 10409, ""),
    ("POST", f"{WF}/echo/instances/e1/events/ok", b"{oops", 400, 10002, "not valid JSON"),
    ("GET", f"{WF}?search=' OR 1=1; DROP TABLE workflows; --", None, 200, 0, ""),
    ("GET", f"{WF}?search={'x' * 65}", None, 400, 10002, "search"),
    ("GET", f"{WF}?per_page=0", None, 400, 10002, "per_page"),
    ("GET", f"{WF}?page=abc", None, 400, 10002, "page"),
    ("GET", f"{WF}/echo/instances?status=done", None, 400, 10002, "status"),
    ("GET", f"{WF}/echo/instances?date_start=yesterday", None, 400, 10002, "date_start"),
    ("GET", f"{WF}/echo/instances?cursor=garbage", None, 400, 10002, "cursor"),
    ("GET", f"{WF}/echo/instances/e1/step?name=echo-1&type=sleep", None, 400, 10002, "type"),
    ("GET", f"{WF}/echo/instances/e1/step?type=step", None, 400, 10002, "name"),
    ("GET", f"{WF}/echo/instances/e1/step?name=echo-1&type=step&attempt=0", None, 400, 10002, ""),
    ("GET", f"{WF}/echo/instances/e1?order=sideways", None, 400, 10002, "order"),
    ("GET", f"{WF}/echo/instances/bad%3Fid", None, 400, 10401, ""),
    ("DELETE", f"{WF}/echo/instances/e1/status", None, 405, 10002, "DELETE"),
    (
        "PATCH",
        f"{WF}/settings",
        {"default_retention": {"success_retention": "forever"}},
        400,
        10002,
        "",
    ),
]


@pytest.fixture
def seeded(server: LiveServer) -> LiveServer:
    server.register("echo", "Echo")
    with server.http() as http:
        http.post(f"{WF}/echo/instances", json={"instance_id": "e1"})
    server.wait_done("echo", "e1")
    return server


def test_each_bad_input_is_refused_cleanly(seeded: LiveServer) -> None:
    with seeded.http() as http:
        before = _snapshot(http)
        for method, path, body, status, code, words in CASES:
            if isinstance(body, bytes):
                answer = http.request(
                    method, path, content=body, headers={"content-type": "application/json"}
                )
            else:
                answer = (
                    http.request(method, path, json=body)
                    if body is not None
                    else http.request(method, path)
                )
            if status == 200:
                assert answer.status_code == 200 and answer.json()["result"] == []
                continue
            _expect(answer, status, code, words)
        assert _snapshot(http) == before


def test_body_over_one_mebibyte_is_413(seeded: LiveServer) -> None:
    with seeded.http() as http:
        before = _snapshot(http)
        big = {"instance_id": "big", "params": "x" * (1 << 20)}
        _expect(http.post(f"{WF}/echo/instances", json=big), 413, 10005)

        def chunks() -> Any:
            for _ in range(20):
                yield b" " * 65536
            yield b"{}"

        chunked = http.post(
            f"{WF}/echo/instances", content=chunks(), headers={"content-type": "application/json"}
        )
        _expect(chunked, 413, 10005)
        assert _snapshot(http) == before


def test_params_in_both_shapes(seeded: LiveServer) -> None:
    with seeded.http() as http:
        for instance_id, params in (("s1", '{"a": 1}'), ("s2", {"a": 1}), ("s3", "plain text")):
            answer = http.post(
                f"{WF}/echo/instances", json={"instance_id": instance_id, "params": params}
            )
            assert answer.status_code == 200
        for instance_id, expected in (("s1", {"a": 1}), ("s2", {"a": 1}), ("s3", "plain text")):
            result = seeded.wait_done("echo", instance_id)
            assert result["params"] == expected
