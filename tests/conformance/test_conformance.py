"""The same workflows, JavaScript on Cloudflare's local engine and Python on Stepstone.

Each test runs one scenario on both engines at once (same instance id, same calls), then
compares the normalized instance details (normalize.py). A behaviour where the two legitimately
differ asserts that documented difference on the raw details (docs/conformance.md has the table).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conformance import normalize
from tests.conformance.oracle import LocalEngine
from tests.conformance.sides import Side

TERMINAL = ("complete", "errored", "terminated")
Scenario = Callable[[Side, str], Any]


@pytest.fixture
def both(
    sides: tuple[Side, Side], pair: ThreadPoolExecutor
) -> Callable[[Scenario], tuple[Any, Any, str]]:
    """Run a scenario on (local engine, Stepstone) at once: (local result, Stepstone's, id)."""

    def run(scenario: Scenario) -> tuple[Any, Any, str]:
        instance_id = f"c-{uuid.uuid4().hex[:16]}"
        local = pair.submit(scenario, sides[0], instance_id)
        ours = pair.submit(scenario, sides[1], instance_id)
        return local.result(120), ours.result(120), instance_id

    return run


def ran(workflow: str, params: Any = None) -> Scenario:
    """Create an instance and wait for its end."""

    def scenario(side: Side, instance_id: str) -> dict[str, Any]:
        side.create(workflow, instance_id, {} if params is None else params)
        return side.wait_status(workflow, instance_id, *TERMINAL)

    return scenario


def agree(local: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    left, right = normalize.pair(local, ours)
    assert right == left
    agreed: dict[str, Any] = right
    return agreed


def names(details: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["type"], s["name"]) for s in details["steps"]]


def test_step_outputs(both: Any) -> None:
    local, ours, _ = both(ran("outputs", {"n": 7}))
    got = agree(local, ours)
    assert got["status"] == "complete"
    assert got["params"] == {"n": 7}
    assert [s["output"] for s in got["steps"]] == [
        {"n": 7, "tags": ["a", "b"]},
        41.5,
        "plain text",
        [1, "two", None, True],
        None,
        False,
    ]


def test_output_rendering_is_text_on_stepstone(both: Any) -> None:
    """Documented difference: production renders outputs as strings; the local engine does not."""
    local, ours, _ = both(ran("outputs", {"n": 1}))
    assert local["steps"][0]["output"] == {"n": 1, "tags": ["a", "b"]}
    assert ours["steps"][0]["output"] == '{"n":1,"tags":["a","b"]}'
    assert "output" not in local["steps"][4]  # a null output: the local engine omits the key
    assert ours["steps"][4]["output"] == "null"


def test_repeated_names_get_counters(both: Any) -> None:
    local, ours, _ = both(ran("counters"))
    got = agree(local, ours)
    assert names(got) == [
        ("step", "x-1"),
        ("step", "x-2"),
        ("sleep", "x-1"),
        ("step", "y-1"),
        ("step", "x-3"),
    ]
    assert got["output"] == [1, 2, "x#3"]


def test_retry_then_success_counts_attempts(both: Any) -> None:
    local, ours, _ = both(ran("retry-then-succeed"))
    got = agree(local, ours)
    attempts = got["steps"][0]["attempts"]
    assert [a["success"] for a in attempts] == [False, False, True]
    assert attempts[0]["error"] == {"name": "TypeError", "message": "attempt 1 fails"}
    assert got["output"] == {"attempt": 3}


def test_non_retryable_error_stops_retries(both: Any) -> None:
    # With workflows_preserve_non_retryable_error_message (production's default for
    # compatibility dates from 2026-05-14; the local engine needs the flag named).
    local, ours, _ = both(ran("non-retryable"))
    got = agree(local, ours)
    assert got["status"] == "errored"
    assert got["error"] == {"name": "NonRetryableError", "message": "no way"}
    assert len(got["steps"][1]["attempts"]) == 1


def test_retries_exhausted(both: Any) -> None:
    local, ours, _ = both(ran("retries-exhausted"))
    got = agree(local, ours)
    assert got["error"] == {"name": "TypeError", "message": "service down"}
    assert got["steps"][0]["success"] is False
    assert len(got["steps"][0]["attempts"]) == 3  # limit 2 = two retries after the first


def test_step_error_caught_in_run(both: Any) -> None:
    local, ours, _ = both(ran("caught-step-error"))
    got = agree(local, ours)
    assert got["status"] == "complete"
    assert got["output"] == {"caught": "TypeError", "why": "still down"}


def test_step_timeout(both: Any) -> None:
    """Agree on the attempt; documented difference on the instance error: the local engine's
    error crosses workerd's RPC as a plain ``Error`` named in its message."""
    local, ours, _ = both(ran("step-timeout"))
    timeout = {"name": "WorkflowTimeoutError", "message": "Execution timed out after 300ms"}
    assert ours["error"] == timeout
    assert local["error"] == {
        "name": "Error",
        "message": f"{timeout['name']}: {timeout['message']}",
    }
    left, right = normalize.pair(local, ours)
    assert right["steps"] == left["steps"]
    assert right["steps"][0]["attempts"] == [{"success": False, "error": timeout}]


def test_sensitive_output_is_redacted(both: Any) -> None:
    local, ours, _ = both(ran("sensitive"))
    got = agree(local, ours)
    assert got["steps"][0]["output"] == "[REDACTED]"
    assert got["steps"][0]["config"]["sensitive"] == "output"
    assert got["output"] == {"length": 7}


def test_sleep_then_continue(both: Any) -> None:
    local, ours, _ = both(ran("sleeper"))
    got = agree(local, ours)
    assert names(got) == [("step", "before-1"), ("sleep", "nap-1"), ("step", "after-1")]
    assert got["steps"][1]["finished"] is True


def test_same_sleep_name_with_other_durations(both: Any) -> None:
    """Documented difference: the local engine counts sleeps per name and duration."""
    local, ours, _ = both(ran("sleep-names"))
    assert [s["name"] for s in local["steps"]] == ["nap-1", "nap-1", "nap-2"]
    assert [s["name"] for s in ours["steps"]] == ["nap-1", "nap-2", "nap-3"]
    assert local["status"] == ours["status"] == "complete"


def test_wait_for_event_delivered(both: Any) -> None:
    def scenario(side: Side, instance_id: str) -> dict[str, Any]:
        side.create("wait-event", instance_id, {"order": 1})
        # Stepstone shows "waiting" once the run has parked; the local engine never does.
        parked = "running" if side.label == "cloudflare-local" else "waiting"
        waiting = side.wait(
            "wait-event",
            instance_id,
            lambda d: d["status"] == parked and any(s["name"] == "approval-1" for s in d["steps"]),
            "the wait",
        )
        side.send("wait-event", instance_id, "approve", {"by": "ann"})
        return {"waiting": waiting, "done": side.wait_status("wait-event", instance_id, *TERMINAL)}

    local, ours, _ = both(scenario)
    agree(local["waiting"], ours["waiting"])
    got = agree(local["done"], ours["done"])
    assert got["output"] == {"type": "approve", "payload": {"by": "ann"}}
    assert got["steps"][1]["output"] == {"by": "ann"}
    # Documented differences: status while waiting, and the wait's output shape.
    assert local["waiting"]["status"] == "running"
    assert ours["waiting"]["status"] == "waiting"
    event = local["done"]["steps"][1]["output"]
    assert set(event) == {"type", "payload", "timestamp"}
    assert event["type"] == "approve"
    assert ours["done"]["steps"][1]["output"] == '{"by":"ann"}'
    assert ours["done"]["steps"][1]["event_type"] == "approve"
    assert "event_type" not in local["done"]["steps"][1]


def test_create_without_params(both: Any) -> None:
    """Documented difference: the local engine records missing params as ``{}``."""

    def scenario(side: Side, instance_id: str) -> dict[str, Any]:
        side.ok("POST", "/workflows/defaults/instances", {side.id_key: instance_id})
        return side.wait_status("defaults", instance_id, *TERMINAL)

    local, ours, _ = both(scenario)
    assert local["params"] == {}
    assert ours["params"] is None
    assert local["status"] == ours["status"] == "complete"


def test_wait_for_event_timeout(both: Any) -> None:
    """Agree on the entry; documented differences in the error's message and name in run()."""
    local, ours, _ = both(ran("wait-timeout"))
    left, right = normalize.pair(local, ours)
    assert right["status"] == left["status"] == "complete"
    for entry in (left["steps"][0], right["steps"][0]):
        assert entry["finished"] is True
        assert entry["error"]["name"] == "WorkflowTimeoutError"
    assert local["steps"][0]["error"]["message"] == ""
    assert ours["steps"][0]["error"]["message"] == "Execution timed out after 1000ms"
    assert left["output"] == {"caught": "Error"}
    assert right["output"] == {"caught": "WorkflowTimeoutError"}


def test_events_sent_before_the_wait_are_buffered(both: Any) -> None:
    def scenario(side: Side, instance_id: str) -> dict[str, Any]:
        side.create("buffered-event", instance_id, {})
        side.send("buffered-event", instance_id, "tick", 1)
        side.send("buffered-event", instance_id, "tick", 2)
        return side.wait_status("buffered-event", instance_id, *TERMINAL)

    local, ours, _ = both(scenario)
    got = agree(local, ours)
    assert got["output"] == [1, 2]


def test_run_throws(both: Any) -> None:
    local, ours, _ = both(ran("run-throws"))
    got = agree(local, ours)
    assert got["status"] == "errored"
    assert got["error"] == {"name": "TypeError", "message": "bad input"}
    assert got["steps"][0]["success"] is True


def test_config_defaults_are_recorded(both: Any) -> None:
    """Documented difference: the local engine's default retry delay is 1 s, production's 10 s."""
    local, ours, _ = both(ran("defaults"))
    agree(local, ours)
    assert local["steps"][0]["config"] == {
        "retries": normalize.LOCAL_DEFAULT_RETRIES,
        "timeout": "10 minutes",
    }
    assert ours["steps"][0]["config"] == {
        "retries": {"limit": 5, "delay": 10000, "backoff": "exponential"},
        "timeout": "10 minutes",
    }


def test_rollback_on_failure(both: Any, local_engine: LocalEngine) -> None:
    """The explorer API omits rollback entries, so Stepstone's are compared with the local
    engine's log: same steps compensated, newest first, each succeeding."""
    local, ours, instance_id = both(ran("saga"))
    got = agree(local, ours)
    assert got["error"] == {"name": "NonRetryableError", "message": "no courier"}
    log = local_engine.states("saga", instance_id)
    rollback_step_start, rollback_step_success, rollback_complete = 18, 22, 24
    local_rollbacks = [target for event, target, _ in log if event == rollback_step_start]
    local_succeeded = [target for event, target, _ in log if event == rollback_step_success]
    assert local_rollbacks == local_succeeded == ["charge-1", "reserve-1"]
    assert any(event == rollback_complete for event, _, _ in log)
    ours_rollbacks = [s for s in ours["steps"] if s["type"] == "rollback"]
    assert [(s["name"], s["success"]) for s in ours_rollbacks] == [
        ("charge-1", True),
        ("reserve-1", True),
    ]
    assert ours["rollback"] == {"outcome": "complete", "error": None}


def test_terminate(both: Any) -> None:
    """Agree; documented difference: Stepstone (as production) adds a ``termination`` entry."""

    def scenario(side: Side, instance_id: str) -> dict[str, Any]:
        side.create("controlled", instance_id, {})
        side.wait_step("controlled", instance_id, "go-1")
        side.action("controlled", instance_id, "terminate")
        return side.wait_status("controlled", instance_id, "terminated")

    local, ours, _ = both(scenario)
    got = agree(local, ours)
    assert names(got) == [("step", "start-1"), ("waitForEvent", "go-1")]
    assert got["steps"][1]["finished"] is False
    assert ours["steps"][-1]["type"] == "termination"
    assert all(s["type"] != "termination" for s in local["steps"])


def test_pause_and_resume(both: Any) -> None:
    def scenario(side: Side, instance_id: str) -> dict[str, Any]:
        side.create("controlled", instance_id, {})
        side.wait_step("controlled", instance_id, "go-1")
        side.action("controlled", instance_id, "pause")
        paused = side.wait_status("controlled", instance_id, "paused")
        side.send("controlled", instance_id, "go", "sent while paused")
        # Nothing may move while paused: give a wrongly woken instance time to show it.
        time.sleep(0.5)
        still = side.details("controlled", instance_id)
        side.action("controlled", instance_id, "resume")
        done = side.wait_status("controlled", instance_id, *TERMINAL)
        return {"paused": paused, "still": still, "done": done}

    local, ours, _ = both(scenario)
    for moment in ("paused", "still"):
        got = agree(local[moment], ours[moment])
        assert got["status"] == "paused"
        assert got["steps"][1]["finished"] is False
    got = agree(local["done"], ours["done"])
    assert got["output"] == {"started": "started", "done": "sent while paused"}


def test_restart(both: Any) -> None:
    def scenario(side: Side, instance_id: str) -> dict[str, Any]:
        side.create("controlled", instance_id, {})
        side.wait_step("controlled", instance_id, "go-1")
        side.send("controlled", instance_id, "go", "first")
        first = side.wait_status("controlled", instance_id, "complete")
        side.action("controlled", instance_id, "restart")
        again = side.wait(
            "controlled",
            instance_id,
            lambda d: d["status"] != "complete" and len(d["steps"]) == 2,
            "the restarted run's wait",
        )
        side.send("controlled", instance_id, "go", "second")
        done = side.wait_status("controlled", instance_id, "complete")
        return {"first": first, "again": again, "done": done}

    local, ours, _ = both(scenario)
    assert agree(local["first"], ours["first"])["output"]["done"] == "first"
    again = agree(local["again"], ours["again"])
    assert again["steps"][1] == {
        "type": "waitForEvent",
        "name": "go-1",
        "finished": False,
        "error": None,
        "output": None,
    }
    assert agree(local["done"], ours["done"])["output"]["done"] == "second"


def test_parallel_steps(both: Any) -> None:
    local, ours, _ = both(ran("parallel"))
    got = agree(local, ours)
    assert names(got) == [("step", f"fetch {n}-1") for n in "abc"] + [("step", "sum-1")]
    assert got["output"] == 30
