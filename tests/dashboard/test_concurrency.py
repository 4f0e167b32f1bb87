"""A capped workflow's page shows running / limit and how many wait for a slot."""

from __future__ import annotations

from tests.dashboard.conftest import ACCOUNT, LiveServer, sign_in


def test_the_workflow_page_shows_running_over_limit(dash: LiveServer) -> None:
    ops = dash.engine.ops
    dash.run(
        ops.put_workflow(
            ACCOUNT,
            "capped",
            class_name="Waiter",
            script_name="tests.dashboard.flows",
            concurrency_limit=3,
        )
    )
    with dash.http() as api:
        for n in range(2):
            api.post(
                f"/accounts/{ACCOUNT}/workflows/capped/instances", json={"instance_id": f"c{n}"}
            )
    for n in range(2):
        dash.wait_status("capped", f"c{n}", {"waiting"})
    with sign_in(dash, dash.token) as client:
        page = client.get(f"/dashboard/accounts/{ACCOUNT}/workflows/capped").text
        # Waiting instances hold no slot.
        assert "0 running / limit 3</span>, 0 waiting for a slot" in page
        plain = client.get(f"/dashboard/accounts/{ACCOUNT}/workflows/waiter").text
        assert "running / limit" not in plain
