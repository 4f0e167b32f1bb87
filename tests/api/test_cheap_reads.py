"""Reads that cost what they return: ``GET instance?simple=true`` answers from the instance row
and an indexed summary, ``GET .../step`` from that step's events only. Both must answer exactly
what the whole history's fold answers, for instances in every status, on every backend, over
real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from stepstone import views
from stepstone.errors import StepNotFound
from stepstone.model import history as h
from stepstone.model.statuses import ALL_STATUSES
from tests.api import read_flows
from tests.api.conftest import ACCOUNT, LiveServer, start_server

FLOWS = "tests.api.read_flows"
WF = f"/accounts/{ACCOUNT}/workflows"


@pytest.fixture
def live(backend_url: str) -> Iterator[LiveServer]:
    read_flows.GATES.clear()  # each server has its own loop
    server, stop = start_server(backend_url)
    try:
        yield server
    finally:
        stop()


@pytest.fixture
def idle(backend_url: str) -> Iterator[LiveServer]:
    """No worker: what is created stays queued."""
    server, stop = start_server(backend_url, run_worker=False)
    try:
        yield server
    finally:
        stop()


def _register(client: httpx.Client, name: str, class_name: str) -> None:
    answer = client.put(f"{WF}/{name}", json={"class_name": class_name, "script_name": FLOWS})
    assert answer.status_code == 200, answer.text


def _create(client: httpx.Client, workflow: str, instance_id: str) -> None:
    answer = client.post(f"{WF}/{workflow}/instances", json={"instance_id": instance_id})
    assert answer.status_code == 200, answer.text


def _patch(client: httpx.Client, workflow: str, instance_id: str, body: dict[str, Any]) -> None:
    answer = client.patch(f"{WF}/{workflow}/instances/{instance_id}/status", json=body)
    assert answer.status_code == 200, answer.text


def _until(
    client: httpx.Client, workflow: str, instance_id: str, status: str, step: str | None = None
) -> None:
    """Until the instance has ``status`` (and, if given, a step named ``step`` has started)."""
    deadline = time.monotonic() + 20
    while True:
        got = client.get(f"{WF}/{workflow}/instances/{instance_id}").json()["result"]
        names = {s.get("name") for s in got["steps"]}
        if got["status"] == status and (step is None or step in names):
            return
        assert time.monotonic() < deadline, f"{instance_id} is {got['status']}, not {status}"
        time.sleep(0.01)


def _same_as_the_fold(client: httpx.Client, workflow: str, instance_id: str) -> dict[str, Any]:
    """The simple answer is the full answer without its steps (the full one still folds the
    whole history), in both orders, byte for byte once the steps are taken out."""
    url = f"{WF}/{workflow}/instances/{instance_id}"
    full = client.get(url).json()
    for order in ("asc", "desc"):
        simple = client.get(url, params={"simple": "true", "order": order})
        assert simple.status_code == 200
        expected = dict(full["result"], steps=[])
        expected.pop("stepstone", None)  # the child-links extension is full-answer only
        assert full["result"]["step_count"] == len(full["result"]["steps"])
        assert orjson.dumps(simple.json()) == orjson.dumps(dict(full, result=expected))
    return dict(full["result"])


def _steps_same_as_the_fold(live: LiveServer, workflow: str, instance_id: str) -> None:
    """Every step's answer, and every wrong-kind ask, is what the whole fold says."""

    async def fold() -> h.InstanceHistory:
        _, record = await live.engine.ops.instance(ACCOUNT, workflow, instance_id)
        return await live.engine.ops.history(record)

    history = live.run(fold())
    url = f"{WF}/{workflow}/instances/{instance_id}/step"
    with live.http() as client:
        for (kind, name), step in history.steps.items():
            for asked in ("step", "waitForEvent"):
                got = client.get(url, params={"name": name, "type": asked})
                wanted_kind = h.DO if asked == "step" else h.WAIT
                if kind == wanted_kind:
                    assert got.status_code == 200, got.text
                    assert got.json()["result"] == views.step_result(step, None), name
                elif (wanted_kind, name) not in history.steps:
                    assert got.status_code == 404, got.text
                    assert got.json()["messages"][0]["message"] == _not_found(history, asked, name)
            if kind == h.DO:
                for attempt in step.attempts:
                    got = client.get(
                        url, params={"name": name, "type": "step", "attempt": attempt.attempt}
                    )
                    assert got.json()["result"] == views.step_result(step, attempt)


def _not_found(history: h.InstanceHistory, kind: str, name: str) -> str:
    """StepNotFound's detail as the whole history words it."""
    other, other_type = (h.WAIT, "waitForEvent") if kind == "step" else (h.DO, "step")
    hint = ""
    if (other, name) in history.steps:
        hint = f"; {name!r} is a {other_type}: ask with type={other_type}"
    elif (h.SLEEP, name) in history.steps:
        hint = f"; {name!r} is a sleep, which has no output"
    return str(StepNotFound(f"no {kind} named {name!r} in this instance's history" + hint))


def test_simple_answers_and_steps_match_the_fold_in_every_status(live: LiveServer) -> None:
    seen: set[str] = set()

    def check(instance_id: str, workflow: str = "held", *, steps: bool = False) -> None:
        with live.http() as client:
            seen.add(_same_as_the_fold(client, workflow, instance_id)["status"])
        if steps:
            _steps_same_as_the_fold(live, workflow, instance_id)

    with live.http() as client:
        _register(client, "held", "Held")
        _register(client, "doomed", "Doomed")
        for instance_id in ("run", "pausing", "rolling", "done", "stopped", "again"):
            _create(client, "held", instance_id)
            _until(client, "held", instance_id, "running", step="hold-1")
        check("run", steps=True)
        _patch(client, "held", "pausing", {"status": "pause"})
        _until(client, "held", "pausing", "waitingForPause")
        check("pausing")
        _patch(client, "held", "rolling", {"status": "terminate", "rollback": True})
        _until(client, "held", "rolling", "rollingBack")
        check("rolling", steps=True)
        for instance_id in ("done", "stopped", "again"):
            live.run(read_flows.open_gate(instance_id))
            _until(client, "held", instance_id, "waiting", step="shared-1")
        check("done")
        _patch(client, "held", "done", {"status": "pause"})
        _until(client, "held", "done", "paused")
        check("done")
        _patch(client, "held", "done", {"status": "resume"})
        answer = client.post(f"{WF}/held/instances/done/events/go", json={"ok": True})
        assert answer.status_code == 200
        _until(client, "held", "done", "complete")
        check("done", steps=True)
        _patch(client, "held", "stopped", {"status": "terminate"})
        _until(client, "held", "stopped", "terminated")
        check("stopped")
        # A restart from a step keeps the first workflow_queued and workflow_started and drops
        # the rest: the summary's queued and start come from what is kept.
        _patch(client, "held", "again", {"status": "restart", "from": {"name": "secret"}})
        _until(client, "held", "again", "waiting", step="shared-1")
        check("again", steps=True)
        _create(client, "doomed", "fails")
        _until(client, "doomed", "fails", "errored")
        check("fails", "doomed", steps=True)
    live.run(read_flows.open_gate("undo-rolling"))
    with live.http() as client:
        _until(client, "held", "rolling", "terminated")
    check("rolling")
    assert seen == set(ALL_STATUSES) - {"queued"}


def test_simple_answers_match_the_fold_before_any_step(idle: LiveServer) -> None:
    with idle.http() as client:
        _register(client, "held", "Held")
        for instance_id in ("waits", "paused", "stopped", "restarted"):
            _create(client, "held", instance_id)
        assert _same_as_the_fold(client, "held", "waits")["status"] == "queued"
        _patch(client, "held", "paused", {"status": "pause"})
        assert _same_as_the_fold(client, "held", "paused")["status"] == "paused"
        _patch(client, "held", "stopped", {"status": "terminate"})
        stopped = _same_as_the_fold(client, "held", "stopped")
        assert stopped["status"] == "terminated" and stopped["step_count"] == 1
        _patch(client, "held", "restarted", {"status": "terminate"})
        _patch(client, "held", "restarted", {"status": "restart"})
        restarted = _same_as_the_fold(client, "held", "restarted")
        assert restarted["status"] == "queued" and restarted["step_count"] == 0
        missing = client.get(f"{WF}/held/instances/nope", params={"simple": "true"})
        assert missing.status_code == 404
        assert missing.json() == client.get(f"{WF}/held/instances/nope").json()
        bad = client.get(f"{WF}/held/instances/bad%20id", params={"simple": "true"})
        assert bad.status_code == client.get(f"{WF}/held/instances/bad%20id").status_code
        no_step = client.get(
            f"{WF}/held/instances/waits/step", params={"name": "first-1", "type": "step"}
        )
        assert no_step.status_code == 404
