"""Repair and webhooks over real HTTP (extensions): envelopes, errors, and Cloudflare's SDK
seeing the repaired step as an ordinary completed one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import ACCOUNT, FLOWS, LiveServer, start_server
from tests.sdk_args import AccountArg

A: AccountArg = {"account_id": ACCOUNT}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live, stop = start_server(f"sqlite:///{tmp_path / 'api.db'}")
    try:
        yield live
    finally:
        stop()


def test_repair_over_http_then_the_sdk_sees_it_complete(server: LiveServer) -> None:
    sdk = server.sdk()
    sdk.workflows.update("failing", **A, class_name="Failing", script_name=FLOWS)
    sdk.workflows.instances.create("failing", **A, instance_id="f1")
    server.wait_status("failing", "f1", {"errored"})
    path = f"/accounts/{ACCOUNT}/workflows/failing/instances/f1/stepstone/repair"
    with server.http() as client:
        bad = client.post(path, json={"step": "doomed", "output": 1, "colour": "red"})
        assert bad.status_code == 400 and bad.json()["success"] is False
        missing = client.post(path, json={"step": "nope", "output": 1})
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["code"] == 10402
        assert "doomed-1" in missing.json()["messages"][0]["message"]
        done = client.post(path, json={"step": "doomed", "output": {"fixed": True}, "resume": True})
        assert done.status_code == 200, done.text
        assert done.json()["result"]["status"] == "queued"
        assert done.json()["result"]["previous"]["error"]["message"] == "no way"
    server.wait_status("failing", "f1", {"complete"})
    got = sdk.workflows.instances.get("f1", **A, workflow_name="failing")
    step = got.steps[0]
    assert step.name == "doomed-1" and step.success is True  # type: ignore[union-attr]
    assert step.output == '{"fixed":true}'  # type: ignore[union-attr]
    with server.http() as client:
        again = client.post(path, json={"step": "doomed", "output": 2})
        assert again.status_code == 409
        assert "while it is complete" in again.json()["messages"][0]["message"]
        audit = client.get(f"/accounts/{ACCOUNT}/stepstone/audit").json()["result"]
        assert [e["action"] for e in audit][:3] == ["repair"] * 3


def test_hooks_over_http(server: LiveServer) -> None:
    sdk = server.sdk()
    sdk.workflows.update("failing", **A, class_name="Failing", script_name=FLOWS)
    hooks = f"/accounts/{ACCOUNT}/workflows/failing/stepstone/hooks"
    with server.http() as client:
        bad = client.post(hooks, json={"url": "ftp://nope", "events": ["errored"]})
        assert bad.status_code == 400 and "body.url" in bad.json()["messages"][0]["message"]
        # Nobody listens on port 9: every attempt fails and is logged.
        made = client.post(hooks, json={"url": "http://127.0.0.1:9/h", "events": ["errored"]})
        assert made.status_code == 200, made.text
        hook = made.json()["result"]
        assert hook["secret"].startswith("whsec_")
        listed = client.get(hooks).json()["result"]
        assert [h["id"] for h in listed] == [hook["id"]]
        assert listed[0]["secret"] == "…" + hook["secret"][-4:]
    sdk.workflows.instances.create("failing", **A, instance_id="f2")
    server.wait_status("failing", "f2", {"errored"})
    with server.http() as client:
        deadline = time.monotonic() + 20
        while True:
            found = client.get(hooks + "/deliveries").json()["result"]
            if found and found[0]["log"]:
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.05)
        [delivery] = found
        assert (delivery["instance"], delivery["event"], delivery["state"]) == (
            "f2",
            "errored",
            "pending",
        )
        assert delivery["log"][0]["error"] and delivery["log"][0]["status_code"] is None
        resent = client.post(f"{hooks}/deliveries/{delivery['id']}/resend")
        assert resent.status_code == 200, resent.text
        assert client.post(f"{hooks}/deliveries/whd_999999/resend").status_code == 404
        assert client.post(f"{hooks}/deliveries/x/resend").status_code == 400
        assert client.get(hooks + "/deliveries?state=lost").status_code == 400
        assert client.delete(f"{hooks}/{hook['id']}").status_code == 200
        assert client.delete(f"{hooks}/{hook['id']}").status_code == 404
        assert client.get(hooks + "/deliveries").json()["result"] == []


def test_restart_with_replayed_events_over_http(server: LiveServer) -> None:
    sdk = server.sdk()
    sdk.workflows.update("waiter", **A, class_name="Waiter", script_name=FLOWS)
    sdk.workflows.instances.create("waiter", **A, instance_id="w1")
    server.wait_status("waiter", "w1", {"waiting"})
    sdk.workflows.instances.events.create(
        "go", **A, workflow_name="waiter", instance_id="w1", body={"n": 1}
    )
    server.wait_status("waiter", "w1", {"complete"})
    path = f"/accounts/{ACCOUNT}/workflows/waiter/instances/w1/stepstone/restart"
    with server.http() as client:
        bad = client.post(path, json={"from": {"name": "wait"}, "events": "keep"})
        assert bad.status_code == 400
        done = client.post(
            path, json={"from": {"name": "wait", "type": "waitForEvent"}, "events": "replay"}
        )
        assert done.status_code == 200, done.text
        assert done.json()["result"] == {"status": "queued", "events": "replay"}
    # The event the dropped wait had consumed is sent again: the new run needs no new one.
    final = server.wait_status("waiter", "w1", {"complete"})
    assert final["output"] == '{"n":1}'
