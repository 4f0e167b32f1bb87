"""The dashboard's "act on all N matching", its progress page, and the Activity panels."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import start_server
from tests.dashboard.conftest import ACCOUNT, LiveServer, csrf_of, prepare, sign_in

WAITER = f"/dashboard/accounts/{ACCOUNT}/workflows/waiter"


@pytest.fixture
def dash(tmp_path: Path) -> Iterator[LiveServer]:
    live, stop = start_server(f"sqlite:///{tmp_path / 'dash.db'}")
    try:
        yield prepare(live)
    finally:
        stop()


def test_act_on_all_matching_then_activity(dash: LiveServer) -> None:
    sdk = dash.sdk()
    for n in range(12):
        sdk.workflows.instances.create("waiter", account_id=ACCOUNT, instance_id=f"w-{n:02d}")
    for n in range(12):
        dash.wait_status("waiter", f"w-{n:02d}", {"waiting"})
    sdk.workflows.instances.status.edit(
        "w-00", account_id=ACCOUNT, workflow_name="waiter", status="pause"
    )
    with sign_in(dash, dash.token) as client:
        listing = client.get(WAITER, params={"status": "waiting"})
        assert listing.status_code == 200
        assert "Act on all <b>11</b> matching" in listing.text
        form = {"csrf": csrf_of(listing.text), "status": "waiting", "from": "", "to": ""}

        review = client.post(WAITER + "/bulk-all", data={**form, "action": "terminate"})
        assert review.status_code == 200, review.text
        assert "Terminate all 11 matching instances of waiter?" in review.text
        assert dash.wait_status("waiter", "w-01", {"waiting"})  # nothing done yet

        started = client.post(
            WAITER + "/bulk-all", data={**form, "action": "terminate", "confirm": "yes"}
        )
        assert started.status_code == 303
        job_page = started.headers["location"]
        deadline = time.monotonic() + 30
        while True:
            progress = client.get(job_page)
            assert progress.status_code == 200
            if "11 of 11 processed (100%)" in progress.text and "complete" in progress.text:
                break
            assert time.monotonic() < deadline, progress.text
            time.sleep(0.1)
        assert re.search(r"<b>11</b> done", progress.text)
        assert dash.wait_status("waiter", "w-00", {"paused"})

        # The Activity panels say who did it: the API token by the SDK, the session's token
        # for the bulk job.
        one = client.get(f"{WAITER}/instances/w-00").text
        assert "Activity" in one and "pause" in one and "test-admin" in one
        other = client.get(f"{WAITER}/instances/w-05").text
        assert "terminate" in other and "(bulk)" in other and "(dashboard)" in other
        workflow_page = client.get(WAITER).text
        assert "bulk.end" in workflow_page and "bulk.start" in workflow_page


def test_read_only_sessions_cannot_act_on_all(dash: LiveServer) -> None:
    with sign_in(dash, dash.extra["read_only"]) as client:
        listing = client.get(WAITER)
        assert "Act on all" not in listing.text
        refused = client.post(
            WAITER + "/bulk-all",
            data={"csrf": csrf_of(listing.text), "action": "delete", "confirm": "yes"},
        )
        assert refused.status_code == 403
