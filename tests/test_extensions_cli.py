"""``stepstone instances repair`` and ``stepstone hooks`` against a real server subprocess."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("ext"), "--insecure-no-auth")
    try:
        yield srv
    finally:
        srv.stop()


def test_repair_and_resume_from_the_cli(server: Server) -> None:
    server.run("workflows", "trigger", "failing", "--id", "r-1")
    server.wait_status("failing", "r-1", "errored")
    bad = server.run(
        "instances", "repair", "failing", "r-1", "--step", "charge", "--output", "{x", check=False
    )
    assert bad.code == 2 and "not valid JSON" in bad.err
    wrong = server.run(
        "instances", "repair", "failing", "r-1", "--step", "nope", "--output", "1", check=False
    )
    assert wrong.code == 1 and "charge-1" in wrong.err
    done = server.run(
        "instances", "repair", "failing", "r-1", "--step", "charge", "--output", '"ok"', "--resume"
    )
    assert "repaired (it had failed: card declined); instance queued" in done.out
    server.wait_status("failing", "r-1", "complete")
    running = server.run(
        "instances", "repair", "failing", "r-1", "--step", "charge", "--output", "1", check=False
    )
    assert running.code == 1 and "while it is complete" in running.err


def test_hooks_from_the_cli(server: Server, tmp_path: Path) -> None:
    added = server.run("hooks", "add", "failing", "http://127.0.0.1:9/h", "-e", "errored")
    assert "shown once" in added.out and "whsec_" in added.out
    hook_id = added.out.split()[1]
    listed = server.run("hooks", "list", "failing")
    assert hook_id in listed.out and "errored" in listed.out
    server.run("workflows", "trigger", "failing", "--id", "r-2")
    deadline = time.monotonic() + 20
    while "Error" not in (out := server.run("hooks", "deliveries", "failing").out):
        assert time.monotonic() < deadline, out
        time.sleep(0.2)
    assert "pending" in out and "r-2" in out and "ConnectError" in out
    delivery = out.split()[0]
    assert "queued to send again" in server.run("hooks", "resend", "failing", delivery).out
    bad = server.run("hooks", "deliveries", "failing", "--state", "lost", check=False)
    assert bad.code == 1 and "query.state: Input should be 'pending'" in bad.err
    assert "deleted" in server.run("hooks", "delete", "failing", hook_id).out
