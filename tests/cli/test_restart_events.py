"""`stepstone instances restart --events drop|replay`: the REST extension's choice, by CLI."""

from __future__ import annotations

from tests.cli.conftest import Result, Server


def _approved(server: Server, instance_id: str) -> None:
    server.run("workflows", "trigger", "approval", "--id", instance_id)
    server.wait_status("approval", instance_id, "waiting")
    server.run(
        "instances", "send-event", "approval", instance_id, "--type", "approval", "--payload", "1"
    )
    server.wait_status("approval", instance_id, "complete")


def _restart(server: Server, instance_id: str, *extra: str) -> str:
    return server.run(
        "instances",
        "restart",
        "approval",
        instance_id,
        "--from-step-name",
        "approve",
        "--from-step-type",
        "waitForEvent",
        *extra,
    ).out


def test_replay_hands_the_new_run_its_event_again(server: Server) -> None:
    _approved(server, "r-1")
    out = _restart(server, "r-1", "--events", "replay")
    assert "restarted (events: replay)" in out
    # The wait gets the event it had before, without anyone sending it again.
    done = server.wait_status("approval", "r-1", "complete")
    assert done["output"] == 1
    assert len([s for s in done["steps"] if s.get("name") == "approve-1"]) == 1


def test_drop_leaves_the_new_run_waiting(server: Server) -> None:
    _approved(server, "d-1")
    result = server.run(
        "instances",
        "restart",
        "approval",
        "d-1",
        "--from-step-name",
        "approve",
        "--from-step-type",
        "waitForEvent",
        "--events",
        "drop",
        "--json",
    ).json()
    assert result["events"] == "drop"
    server.wait_status("approval", "d-1", "waiting")


def test_events_needs_a_step_and_a_known_choice(server: Server) -> None:
    alone = server.run("instances", "restart", "approval", "x", "--events", "replay", check=False)
    assert alone.code == 2 and "--events needs --from-step-name" in alone.err
    bad = _restart_unchecked(server, "--events", "keep")
    assert bad.code == 2 and "keep" in bad.err
    # A step the instance never ran: the extension route answers 404, said plainly.
    _approved(server, "m-1")
    missing = server.run(
        "instances",
        "restart",
        "approval",
        "m-1",
        "--from-step-name",
        "nope",
        "--events",
        "replay",
        check=False,
    )
    assert missing.code == 1 and "nope" in missing.err


def _restart_unchecked(server: Server, *extra: str) -> Result:
    return server.run(
        "instances", "restart", "approval", "x", "--from-step-name", "approve", *extra, check=False
    )
