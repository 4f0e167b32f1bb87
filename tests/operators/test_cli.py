"""``stepstone instances bulk`` and ``stepstone audit`` against a real server process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("ops-cli"), "--insecure-no-auth")
    try:
        yield srv
    finally:
        srv.stop()


def test_bulk_dry_run_confirm_run_and_audit(server: Server, tmp_path: Path) -> None:
    for n in range(5):
        server.run("workflows", "trigger", "approval", "{}", "--id", f"a-{n}")
    for n in range(5):
        server.wait_status("approval", f"a-{n}", "waiting")
    server.run("workflows", "trigger", "approval", "{}", "--id", "b-0")
    server.wait_status("approval", "b-0", "waiting")

    args = ("instances", "bulk", "approval", "terminate", "--status", "waiting")
    dry = server.run(*args, "--id-prefix", "a-", "--dry-run", "--json").json()
    assert dry["matched"] == 5
    assert [i["id"] for i in dry["instances"]] == [f"a-{n}" for n in range(5)]
    human = server.run(*args, "--id-prefix", "a-", "--dry-run").out
    assert "5 instances of approval match" in human

    # Not a terminal and no --yes: nothing happens, and it says how to go on.
    refused = server.run(*args, "--id-prefix", "a-", check=False)
    assert refused.code == 1 and "pass --yes" in refused.err
    assert server.wait_status("approval", "a-0", "waiting")

    job = server.run(*args, "--id-prefix", "a-", "--yes", "--json").json()
    assert (job["status"], job["done"], job["skipped"], job["failed"]) == ("complete", 5, 0, 0)
    assert server.wait_status("approval", "b-0", "waiting")  # outside the filter
    status = server.run("instances", "bulk-status", job["id"], "--json").json()
    assert status["done"] == 5

    # Again: everything is already ended, each is skipped with its reason, exit 0.
    again = server.run("instances", "bulk", "approval", "terminate", "--id-prefix", "a-", "--yes")
    assert "skipped 5" in again.out + again.err
    assert "already ended" in again.out + again.err

    entries = server.run("audit", "--workflow", "approval", "--json", "--limit", "100").json()
    terminated = [e for e in entries if e["action"] == "terminate"]
    assert sorted(e["instance"] for e in terminated) == [f"a-{n}" for n in range(5)]
    assert {e["actor"]["kind"] for e in terminated} == {"anonymous"}
    assert {e["bulk_job_id"] for e in terminated} == {job["id"]}
    one = server.run("audit", "--instance", "a-3", "--json").json()
    assert [e["action"] for e in one] == ["terminate"]
    table = server.run("audit", "--workflow", "approval", "--action", "bulk.start").out
    assert "bulk.start" in table
