"""GET .../instances/{id}/subscribe: history then live events as SSE, ending on a terminal one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from tests.dashboard.conftest import ACCOUNT, LiveServer, sign_in

TERMINAL = {"workflow_completed", "workflow_errored", "workflow_terminated"}


def url(workflow: str, instance: str) -> str:
    return f"/accounts/{ACCOUNT}/workflows/{workflow}/instances/{instance}/subscribe"


def frames(answer: httpx.Response) -> Iterator[dict[str, Any]]:
    """Each SSE event as ``{"id": ..., "data": ...}``; comments and retry lines skipped."""
    current: dict[str, Any] = {}
    for line in answer.iter_lines():
        if not line:
            if "data" in current:
                yield current
            current = {}
        elif line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("data: "):
            current["data"] = orjson.loads(line[6:])


def all_events(client: httpx.Client, path: str, **kwargs: Any) -> list[dict[str, Any]]:
    with client.stream("GET", path, timeout=20, **kwargs) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        return [frame["data"] for frame in frames(answer)]


def test_history_then_live_then_the_end(dash: LiveServer) -> None:
    dash.run(dash.engine.workflow("waiter").create(id="w1"))
    dash.wait_step("waiter", "w1", "wait-1")
    seen: list[dict[str, Any]] = []
    with dash.http() as client, client.stream("GET", url("waiter", "w1"), timeout=20) as answer:
        for frame in frames(answer):
            event = frame["data"]
            assert frame["id"] == event["eventId"]
            seen.append(event)
            if event["type"] == "wait_started":
                # Everything so far was history; the rest arrives live.
                sent = client.post(
                    f"/accounts/{ACCOUNT}/workflows/waiter/instances/w1/events/go", json={"n": 1}
                )
                assert sent.status_code == 200
    types = [e["type"] for e in seen]
    assert types[0] == "workflow_queued"
    assert types[-1] == "workflow_completed"
    assert {"wait_started", "wait_completed"} <= set(types)
    ids = [e["eventId"] for e in seen]
    assert ids == sorted(set(ids))
    for event in seen:
        assert event["instanceId"] == "w1"
        assert isinstance(event["timestamp"], int)
    wait = next(e for e in seen if e["type"] == "wait_started")
    assert wait["stepName"] == "wait-1" and wait["eventType"] == "go"
    assert seen[-1]["output"] == {"n": 1}


def test_cursor_last_event_id_and_filter(dash: LiveServer) -> None:
    dash.run(dash.engine.workflow("waiter").create(id="w2"))
    dash.wait_step("waiter", "w2", "wait-1")
    with dash.http() as client:
        client.post(f"/accounts/{ACCOUNT}/workflows/waiter/instances/w2/events/go", json=None)
        dash.wait_done("waiter", "w2")
        everything = all_events(client, url("waiter", "w2"))
        middle = everything[2]["eventId"]
        after = all_events(client, url("waiter", "w2"), params={"cursor": middle})
        assert after == [e for e in everything if e["eventId"] > middle]
        # A reconnecting EventSource repeats the URL and adds Last-Event-ID: the later wins.
        resumed = all_events(
            client,
            url("waiter", "w2"),
            params={"cursor": 0},
            headers={"last-event-id": str(everything[-2]["eventId"])},
        )
        assert resumed == everything[-1:]
        only = all_events(
            client, url("waiter", "w2"), params={"filter": "wait_started,workflow_completed"}
        )
        assert [e["type"] for e in only] == ["wait_started", "workflow_completed"]
        # Nothing left to send for an ended instance: 204 tells EventSource to stop retrying.
        done = client.get(url("waiter", "w2"), params={"cursor": everything[-1]["eventId"]})
        assert done.status_code == 204


def test_sensitive_outputs_and_byte_streams_are_never_sent(dash: LiveServer) -> None:
    dash.run(dash.engine.workflow("journey").create(id="j1", params={"sleep": "1 second"}))
    dash.wait_step("journey", "j1", "await approval-1")
    with dash.http() as client:
        client.post(f"/accounts/{ACCOUNT}/workflows/journey/instances/j1/events/approval")
        events = all_events(client, url("journey", "j1"))
    completed = {e["stepName"]: e for e in events if e["type"] == "step_completed"}
    assert completed["secret-1"]["output"] == "[REDACTED]"
    assert completed["report-1"]["output"] == "[ReadableStream (binary): 1008 bytes]"
    assert completed["prepare-1"]["output"] == {"items": 3, "note": "ready"}
    assert "hunter2" not in orjson.dumps(events).decode()
    errored = next(e for e in events if e["type"] == "attempt_errored")
    assert errored["retryDelayMs"] == 300
    assert errored["error"] == {"name": "ConnectionError", "message": "warming up"}
    sleep = next(e for e in events if e["type"] == "sleep_started")
    assert sleep["durationMs"] == 1000 and sleep["stepName"] == "cool off-1"
    # The cursor may lie after a sensitive step's start: its output stays hidden.
    secret_done = completed["secret-1"]["eventId"]
    with dash.http() as client:
        later = all_events(client, url("journey", "j1"), params={"cursor": secret_done - 1})
    assert later[0]["output"] == "[REDACTED]"


def test_errors_are_enveloped(dash: LiveServer) -> None:
    with dash.http() as client:
        missing = client.get(url("waiter", "nope"))
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["message"] == "workflows.api.error.instance.not_found"
        no_workflow = client.get(url("ghost", "nope"))
        assert no_workflow.status_code == 404
        assert not no_workflow.json()["success"]
        dash.run(dash.engine.workflow("waiter").create(id="w3"))
        bad = client.get(url("waiter", "w3"), params={"filter": "step_started,nonsense"})
        assert bad.status_code == 400
        assert "nonsense" in bad.text
    with dash.http(token=None) as anonymous:
        assert anonymous.get(url("waiter", "w3")).status_code == 401
    # Read access is enough; the instance waits, so the stream stays open: read its head.
    with (
        dash.http(token=dash.extra["read_only"]) as reader,
        reader.stream("GET", url("waiter", "w3"), timeout=20) as answer,
    ):
        assert answer.status_code == 200
        assert next(frames(answer))["data"]["type"] == "workflow_queued"


def test_the_dashboard_serves_the_same_stream_behind_its_session(dash: LiveServer) -> None:
    dash.run(dash.engine.workflow("waiter").create(id="w4"))
    dash.wait_step("waiter", "w4", "wait-1")
    path = f"/dashboard/accounts/{ACCOUNT}/workflows/waiter/instances/w4/events"
    with sign_in(dash, dash.token) as browser, browser.stream("GET", path, timeout=20) as answer:
        assert answer.status_code == 200
        first = next(frames(answer))["data"]
    assert first["type"] == "workflow_queued"
    with httpx.Client(base_url=dash.base) as anonymous:
        assert anonymous.get(path).status_code == 401
