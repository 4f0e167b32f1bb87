"""``concurrency: {limit: N}`` through the REST PUT wrangler and the SDK send: enforced by the
worker, shown by GET, every bad value refused with an envelope."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

from stepstone import WorkflowEntrypoint
from tests.api.conftest import ACCOUNT, LiveServer
from tests.engine.conftest import LoopPasses

HERE = __name__
GATE = threading.Event()
WF = f"/accounts/{ACCOUNT}/workflows"


class Gated(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("hold")
        async def hold() -> int:
            await asyncio.to_thread(GATE.wait, 30)
            return 1

        return await hold()


class Sleeper(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        await step.sleep("nap", "1 hour")
        return 1


def _put(client: httpx.Client, name: str, class_name: str, concurrency: Any) -> httpx.Response:
    body = {"class_name": class_name, "script_name": HERE, "concurrency": concurrency}
    return client.put(f"{WF}/{name}", json=body)


def _statuses(client: httpx.Client, name: str) -> dict[str, int]:
    return dict(client.get(f"{WF}/{name}").json()["result"]["instances"])


def _until(check: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def test_instances_over_the_limit_wait_queued_and_all_finish(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    GATE.clear()
    assert server.engine.worker is not None
    passes = LoopPasses(server.engine.worker, monkeypatch)
    sdk = server.sdk()
    sdk.workflows.update(
        "gated", account_id=ACCOUNT, class_name="Gated", script_name=HERE, concurrency={"limit": 2}
    )
    for n in range(5):
        sdk.workflows.instances.create("gated", account_id=ACCOUNT, instance_id=f"g{n}")
    with server.http() as client:
        _until(lambda: _statuses(client, "gated")["running"] == 2)
        # A whole pass of the worker in which to (wrongly) start a third, before looking again.
        passes.more_sync()
        counts = _statuses(client, "gated")
        assert (counts["running"], counts["queued"]) == (2, 3)
        shown = client.get(f"{WF}/gated").json()["result"]["concurrency"]
        assert shown == {"limit": 2, "running": 2, "queued": 3}
        GATE.set()
        for n in range(5):
            server.wait_done("gated", f"g{n}")
        # Oldest first: the two created first were the two that ran first.
        started = {
            n: client.get(f"{WF}/gated/instances/g{n}").json()["result"]["start"] for n in range(5)
        }
        assert max(started[0], started[1]) <= min(started[2], started[3], started[4])


def test_a_sleeping_instance_holds_no_slot(server: LiveServer) -> None:
    with server.http() as client:
        assert _put(client, "sleepy", "Sleeper", {"limit": 1}).status_code == 200
        for n in range(3):
            client.post(f"{WF}/sleepy/instances", json={"instance_id": f"s{n}"})
        # Cloudflare: only running instances count; sleeping ones are waiting.
        _until(lambda: _statuses(client, "sleepy")["waiting"] == 3)


def test_the_answer_of_an_uncapped_workflow_is_unchanged(server: LiveServer) -> None:
    with server.http() as client:
        assert _put(client, "plain", "Sleeper", None).status_code == 200
        assert "concurrency" not in client.get(f"{WF}/plain").json()["result"]
        assert _put(client, "empty", "Sleeper", {}).status_code == 200
        assert "concurrency" not in client.get(f"{WF}/empty").json()["result"]


@pytest.mark.parametrize(
    "concurrency",
    [{"limit": 0}, {"limit": -3}, {"limit": "4"}, {"limit": 1.5}, {"limit": 2**31}, 5],
)
def test_bad_limits_are_refused(server: LiveServer, concurrency: Any) -> None:
    with server.http() as client:
        answer = _put(client, "bad", "Sleeper", concurrency)
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body["success"] is False and body["errors"][0]["code"] == 10002, body
        assert "concurrency" in " ".join(m["message"] for m in body["messages"]), body
        assert client.get(f"{WF}/bad").status_code == 404
