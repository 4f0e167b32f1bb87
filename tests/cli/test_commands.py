"""``stepstone workflows`` and ``stepstone instances`` against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.cli.conftest import Server


def test_workflows_list_and_describe(server: Server) -> None:
    listed = server.run("workflows", "list", "--json").json()
    assert {w["name"] for w in listed} >= {"greeter", "approval", "streamer"}
    human = server.run("workflows", "list")
    assert "Workflows" in human.out and "greeter" in human.out
    described = server.run("workflows", "describe", "greeter", "--json").json()
    assert described["name"] == "greeter"
    assert described["latest_version"]["class_name"] == "Greeter"
    assert described["schedules"][0]["cron"] == "0 3 1 1 *"
    assert described["schedules"][0]["next_instance"]
    described_text = server.run("workflows", "describe", "greeter").out
    assert "0 3 1 1 *" in described_text and "Next instance" in described_text


def test_trigger_describe_latest_and_step_output(server: Server) -> None:
    queued = server.run("workflows", "trigger", "greeter", '{"name": "ada"}', "--id", "g-1")
    assert 'Workflow instance "g-1" has been queued' in queued.out
    server.wait_status("greeter", "g-1", "complete")
    detail = server.run("instances", "describe", "greeter", "latest", "--json").json()
    assert detail["params"] == {"name": "ada"}
    assert detail["status"] == "complete"
    human = server.run("instances", "describe", "greeter", "g-1", "--truncate-output-limit", "20")
    assert "Completed" in human.out and "greet-1" in human.out and "more chars" in human.out
    full = server.run("instances", "step", "greeter", "g-1", "--step", "greet-1").json()
    assert full == {"greeting": "hello ada", "padding": "x" * 300}
    # wrangler's path works too.
    listed = server.run("workflows", "instances", "list", "greeter", "--json").json()
    assert "g-1" in [i["id"] for i in listed]


def test_generated_id_and_no_params(server: Server) -> None:
    created = server.run("workflows", "trigger", "greeter", "--json").json()
    assert created["status"] == "queued" and len(created["id"]) == 36
    assert server.wait_status("greeter", created["id"], "complete")["params"] in (None, {})


def test_byte_stream_step_saved_to_a_file(server: Server, tmp_path: Path) -> None:
    server.run("workflows", "trigger", "streamer", "--id", "s-1")
    server.wait_status("streamer", "s-1", "complete")
    target = tmp_path / "out.bin"
    server.run("instances", "step", "streamer", "s-1", "--step", "produce-1", "-o", str(target))
    expected = b"".join(bytes([i]) * 1000 + b"\xff\xfe" for i in range(3))
    assert target.read_bytes() == expected


def test_event_pause_resume_restart_terminate(server: Server) -> None:
    server.run("workflows", "trigger", "approval", "--id", "a-1")
    waiting = server.wait_status("approval", "a-1", "waiting")
    assert [s["name"] for s in waiting["steps"]] == ["prepare-1", "approve-1"]
    assert "paused" in server.run("instances", "pause", "approval", "a-1").out
    assert "resumed" in server.run("instances", "resume", "approval", "a-1").out
    server.wait_status("approval", "a-1", "waiting")
    server.run(
        "instances",
        "send-event",
        "approval",
        "a-1",
        "--type",
        "approval",
        "--payload",
        '{"ok": true}',
    )
    done = server.wait_status("approval", "a-1", "complete")
    assert done["output"] in ({"ok": True}, json.dumps({"ok": True}), '{"ok":true}')
    event = server.run(
        "instances", "step", "approval", "a-1", "--step", "approve-1", "--type", "waitForEvent"
    ).json()
    assert event == {"ok": True}
    server.run(
        "instances",
        "restart",
        "approval",
        "a-1",
        "--from-step-name",
        "approve",
        "--from-step-type",
        "waitForEvent",
    )
    again = server.wait_status("approval", "a-1", "waiting")
    assert [s["name"] for s in again["steps"]] == ["prepare-1", "approve-1"]
    out = server.run("instances", "terminate", "approval", "a-1", "--rollback").out
    assert "terminated" in out
    ended = server.wait_status("approval", "a-1", "terminated")
    assert ended["rollback"]["outcome"] == "complete"
    timeline = server.run("instances", "describe", "approval", "a-1").out
    assert "rollback" in timeline and "by api" in timeline


def test_list_filters_and_cursor_pages(server: Server) -> None:
    for n in range(5):
        server.run("workflows", "trigger", "failing", "--id", f"f-{n}")
    for n in range(5):
        server.wait_status("failing", f"f-{n}", "errored")
    errored = server.run("instances", "list", "failing", "--status", "errored", "--json").json()
    assert len(errored) == 5
    first = server.run("instances", "list", "failing", "--per-page", "2", "--json").json()
    third = server.run(
        "instances", "list", "failing", "--per-page", "2", "--page", "3", "--json"
    ).json()
    assert len(first) == 2 and len(third) == 1
    assert not {i["id"] for i in first} & {i["id"] for i in third}
    empty = server.run("instances", "list", "failing", "--status", "paused")
    assert "No instances" in empty.err
    human = server.run("instances", "describe", "failing", "f-0").out
    assert "card declined" in human


def test_delete_many_in_batches_and_report_failures(server: Server) -> None:
    ids = [f"d-{n}" for n in range(130)]
    for start in range(0, len(ids), 100):
        response = httpx.post(
            f"{server.url}/client/v4/accounts/default/workflows/sleeper/instances/batch",
            json=[{"instance_id": i} for i in ids[start : start + 100]],
        )
        assert response.status_code == 200, response.text
    result = server.run("instances", "delete", "sleeper", *ids, "--json").json()
    assert sorted(d["id"] for d in result["deleted"]) == sorted(ids)
    missing = server.run("instances", "delete", "sleeper", "d-0", check=False)
    assert missing.code == 1 and "instance not found (code 10400)" in missing.err


def test_delete_from_a_file_and_latest(server: Server, tmp_path: Path) -> None:
    for n in range(3):
        server.run("workflows", "trigger", "sleeper", "--id", f"file-{n}")
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(["file-0", "file-1"]))
    out = server.run("instances", "delete", "sleeper", "latest", "--filename", str(ids)).out
    assert "Deleted 3 instances" in out


def test_terminate_all(server: Server) -> None:
    for n in range(4):
        server.run("workflows", "trigger", "sleeper", "--id", f"t-{n}")
    for n in range(4):
        server.wait_status("sleeper", f"t-{n}", "waiting")
    out = server.run("instances", "terminate-all", "sleeper", "--status", "waiting").out
    assert "has been started" in out and "0 left unfinished" in out
    for n in range(4):
        server.wait_status("sleeper", f"t-{n}", "terminated")


def test_workflow_delete(server: Server) -> None:
    httpx.put(
        f"{server.url}/client/v4/accounts/default/workflows/doomed",
        json={"class_name": "Greeter", "script_name": "tests.cli.flows"},
    ).raise_for_status()
    assert "deleted" in server.run("workflows", "delete", "doomed").out
    gone = server.run("workflows", "describe", "doomed", check=False)
    assert gone.code == 1
    assert "error: Workflow 'doomed' not found (code 10200)" in gone.err


def test_api_errors_are_clean_and_exit_1(server: Server) -> None:
    missing = server.run("instances", "describe", "greeter", "nope", check=False)
    assert missing.code == 1 and "not found (code 10400)" in missing.err
    assert "Traceback" not in missing.err
    step = server.run("instances", "step", "greeter", "g-1", "--step", "greet", check=False)
    assert step.code == 1 and "'greet-1'" in step.err
    bad = server.run("workflows", "trigger", "greeter", "--id", "bad id!", check=False)
    assert bad.code == 1 and "(code 10401)" in bad.err
    httpx.put(
        f"{server.url}/client/v4/accounts/default/workflows/unused",
        json={"class_name": "Greeter", "script_name": "tests.cli.flows"},
    ).raise_for_status()
    nothing = server.run("instances", "describe", "unused", "latest", check=False)
    assert nothing.code == 1 and "has no instances" in nothing.err


def test_usage_errors_exit_2(sqlite_server: Server) -> None:
    server = sqlite_server  # refused before any request: one backend is enough
    assert server.run("workflows", "trigger", "greeter", "{nope", check=False).code == 2
    restart = server.run("instances", "restart", "x", "y", "--from-step-count", "2", check=False)
    assert restart.code == 2 and "--from-step-name" in restart.err
    assert server.run("instances", "list", "x", "--status", "bogus", check=False).code == 2
    assert (
        server.run(
            "instances", "send-event", "x", "y", "--type", "t", "--payload", "{", check=False
        ).code
        == 2
    )
    assert server.run("instances", "delete", "x", check=False).code == 2


def test_unreachable_server(sqlite_server: Server) -> None:
    server = sqlite_server
    result = server.run("workflows", "list", "--url", "http://127.0.0.1:9", check=False)
    assert result.code == 1 and "cannot reach the Stepstone server" in result.err
