"""``stepstone workflows describe`` shows a capped workflow's running / limit and its queue."""

from __future__ import annotations

import httpx

from tests.cli.conftest import Server


def test_describe_shows_running_over_limit(server: Server) -> None:
    base = f"{server.url}/client/v4/accounts/default/workflows"
    body = {"class_name": "Sleeper", "script_name": "tests.cli.flows", "concurrency": {"limit": 2}}
    assert httpx.put(f"{base}/capped", json=body).status_code == 200
    for n in range(3):
        httpx.post(f"{base}/capped/instances", json={"instance_id": f"c{n}"})
    for n in range(3):
        server.wait_status("capped", f"c{n}", "waiting")
    described = server.run("workflows", "describe", "capped", "--json").json()
    # Sleeping instances hold no slot.
    assert described["concurrency"] == {"limit": 2, "running": 0, "queued": 0}
    human = server.run("workflows", "describe", "capped").out
    assert "0 running / limit 2, 0 waiting for a slot" in human
    assert "Concurrency" not in server.run("workflows", "describe", "greeter").out
