"""The operator extensions over real HTTP: bulk jobs and the audit log, beside Cloudflare's
SDK, which sees nothing of them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
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


def wait_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        job = client.get(f"/accounts/{ACCOUNT}/stepstone/bulk/{job_id}").json()["result"]
        if job["status"] in ("complete", "failed", "cancelled"):
            return dict(job)
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_bulk_terminate_over_http_and_the_audit_trail(server: LiveServer) -> None:
    sdk = server.sdk()
    sdk.workflows.update("waiter", **A, class_name="Waiter", script_name=FLOWS)
    for n in range(30):
        sdk.workflows.instances.create("waiter", **A, instance_id=f"w-{n:02d}")
    for n in range(30):
        server.wait_status("waiter", f"w-{n:02d}", {"waiting"})
    sdk.workflows.instances.status.edit("w-00", **A, workflow_name="waiter", status="pause")
    bulk = f"/accounts/{ACCOUNT}/workflows/waiter/stepstone/bulk"
    with server.http() as client:
        dry = client.post(
            bulk, json={"action": "terminate", "filter": {"status": ["waiting"]}, "dry_run": True}
        )
        assert dry.status_code == 200, dry.text
        assert dry.json()["result"]["matched"] == 29
        assert dry.json()["result"]["instances"][0]["id"] == "w-01"

        started = client.post(bulk, json={"action": "terminate", "filter": {"status": ["waiting"]}})
        assert started.status_code == 200, started.text
        job = wait_job(client, started.json()["result"]["id"])
        assert (job["done"], job["skipped"], job["failed"], job["matched"]) == (29, 0, 0, 29)
        assert job["actor"]["name"] == "test-admin" and job["actor"]["id"]
        listed = client.get(bulk).json()["result"]
        assert [j["id"] for j in listed] == [job["id"]]

        # The SDK sees the outcome and nothing else: its listing is Cloudflare's shape.
        statuses = {i.id: i.status for i in sdk.workflows.instances.list("waiter", **A)}
        assert statuses["w-00"] == "paused"
        assert {s for i, s in statuses.items() if i != "w-00"} == {"terminated"}

        audit = f"/accounts/{ACCOUNT}/stepstone/audit"
        mine = client.get(audit, params={"instance": "w-00"}).json()["result"]
        assert [(e["action"], e["outcome"], e["actor"]["name"]) for e in mine] == [
            ("pause", "ok", "test-admin")
        ]
        assert mine[0]["actor"]["id"] == job["actor"]["id"]  # the token's id
        first = client.get(audit, params={"per_page": 20, "action": "terminate"}).json()
        assert first["result_info"]["count"] == 20
        rest = client.get(
            audit,
            params={
                "per_page": 20,
                "action": "terminate",
                "cursor": first["result_info"]["cursor"],
            },
        ).json()
        seen = [e["instance"] for e in first["result"] + rest["result"]]
        assert len(seen) == len(set(seen)) == 29
        assert "cursor" not in rest["result_info"]
        assert {e["bulk_job_id"] for e in first["result"]} == {job["id"]}
        # Several actions at once: one comma-separated value, as every list in a query here.
        both = client.get(audit, params={"per_page": 100, "action": "pause,terminate"}).json()
        assert {e["action"] for e in both["result"]} == {"pause", "terminate"}
        assert both["result_info"]["count"] == 30
        # Dates are ISO-8601, as in every list here; anything else is a clear 400.
        later = client.get(audit, params={"since": "2999-01-01T00:00:00Z"}).json()
        assert later["result"] == []
        bad = client.get(audit, params={"until": "0.5"})
        assert bad.status_code == 400 and "until must be an ISO-8601 date" in bad.text
        empty = client.get(audit, params={"since": ""})
        assert empty.status_code == 400 and "since is empty" in empty.text


def test_bad_bulk_requests_are_clear(server: LiveServer) -> None:
    server.register("waiter", "Waiter")
    bulk = f"/accounts/{ACCOUNT}/workflows/waiter/stepstone/bulk"
    with server.http() as client:
        cases = [
            ({"action": "explode"}, "action"),
            ({"action": "pause", "filter": {"status": ["nope"]}}, "status"),
            ({"action": "pause", "filter": {"created_after": "yesterday"}}, "created_after"),
            ({"action": "delete", "rollback": True}, "rollback"),
            ({"action": "terminate", "from_step": "charge"}, "from_step"),
        ]
        for body, message in cases:
            answer = client.post(bulk, json=body)
            assert answer.status_code == 400, answer.text
            said = " ".join(m["message"] for m in answer.json()["messages"])
            assert message in said, answer.text
        missing = client.post(
            f"/accounts/{ACCOUNT}/workflows/nope/stepstone/bulk", json={"action": "pause"}
        )
        assert missing.status_code == 404
        assert client.get(f"/accounts/{ACCOUNT}/stepstone/bulk/nope").status_code == 404
        assert client.get(f"/accounts/{ACCOUNT}/stepstone/audit?cursor=x").status_code == 400
        bad_outcome = client.get(f"/accounts/{ACCOUNT}/stepstone/bulk/nope/items?outcome=x")
        assert bad_outcome.status_code == 400
        # Append-only: the log has no write verbs.
        assert client.delete(f"/accounts/{ACCOUNT}/stepstone/audit").status_code in (404, 405)
