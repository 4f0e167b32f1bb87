"""The repair form and the webhooks page of the dashboard (extensions), over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import ACCOUNT, FLOWS, LiveServer, start_server
from tests.dashboard.conftest import csrf_of, prepare, sign_in
from tests.sdk_args import AccountArg

A: AccountArg = {"account_id": ACCOUNT}
WORKFLOW = f"/dashboard/accounts/{ACCOUNT}/workflows/failing"


@pytest.fixture
def dash(tmp_path: Path) -> Iterator[LiveServer]:
    live, stop = start_server(f"sqlite:///{tmp_path / 'dash.db'}")
    try:
        yield prepare(live)
    finally:
        stop()


def test_repair_form_and_webhook_deliveries(dash: LiveServer) -> None:
    sdk = dash.sdk()
    sdk.workflows.update("failing", **A, class_name="Failing", script_name=FLOWS)
    with dash.http() as api:
        made = api.post(
            f"/accounts/{ACCOUNT}/workflows/failing/stepstone/hooks",
            json={"url": "http://127.0.0.1:9/h", "events": ["errored"]},
        )
        assert made.status_code == 200, made.text
    sdk.workflows.instances.create("failing", **A, instance_id="d1")
    dash.wait_status("failing", "d1", {"errored"})
    with sign_in(dash, dash.token) as client:
        page = client.get(f"{WORKFLOW}/instances/d1")
        assert "Repair a step" in page.text and 'value="do:1:doomed"' in page.text
        csrf = csrf_of(page.text)
        bad = client.post(
            f"{WORKFLOW}/instances/d1/repair",
            data={"csrf": csrf, "step": "do:1:doomed", "output": "{nope", "resume": "yes"},
        )
        assert bad.status_code == 303
        assert "not valid JSON" in client.get(f"{WORKFLOW}/instances/d1").text
        done = client.post(
            f"{WORKFLOW}/instances/d1/repair",
            data={"csrf": csrf, "step": "do:1:doomed", "output": '{"ok": 1}', "resume": "yes"},
        )
        assert done.status_code == 303
        dash.wait_status("failing", "d1", {"complete"})
        assert "Repair a step" not in client.get(f"{WORKFLOW}/instances/d1").text
        forged = client.post(
            f"{WORKFLOW}/instances/d1/repair", data={"csrf": "guess", "step": "do:1:doomed"}
        )
        assert forged.status_code == 403

        assert "/hooks" in client.get(WORKFLOW).text
        deadline = time.monotonic() + 20
        while "ConnectError" not in (hooks := client.get(f"{WORKFLOW}/hooks")).text:
            assert time.monotonic() < deadline, hooks.text
            time.sleep(0.1)
        assert "whd_1" in hooks.text and "d1" in hooks.text and "Re-send" in hooks.text
        resent = client.post(
            f"{WORKFLOW}/hooks/deliveries/whd_1/resend", data={"csrf": csrf_of(hooks.text)}
        )
        assert resent.status_code == 303
        assert "queued to send again" in client.get(f"{WORKFLOW}/hooks").text
