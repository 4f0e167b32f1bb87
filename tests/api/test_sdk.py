"""The official SDK (cloudflare==5.9.0) drives every one of its 14 workflows methods against a
live server, with strict response validation: the shapes must be the SDK's own models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cloudflare
import pytest

from tests.api.conftest import ACCOUNT, FLOWS, LiveServer
from tests.sdk_args import AccountArg

A: AccountArg = {"account_id": ACCOUNT}


def test_workflows_update_get_list_delete(server: LiveServer) -> None:
    client = server.sdk()
    first = client.workflows.update(
        "echo", **A, class_name="Echo", script_name=FLOWS, limits={"steps": 100}
    )
    assert first is not None and first.name == "echo" and first.version_id
    second = client.workflows.update(
        "echo",
        **A,
        class_name="Echo",
        script_name=FLOWS,
        default_retention={"success_retention": "1 day", "error_retention": 3_600_000},
        schedules=[{"cron": "*/5 * * * *"}],
    )
    assert second is not None and second.version_id != first.version_id
    assert second.id == first.id

    got = client.workflows.get("echo", **A)
    assert got is not None and got.script_name == FLOWS and got.class_name == "Echo"
    assert got.instances["complete"] == 0
    assert got.schedules and got.schedules[0].cron == "*/5 * * * *"

    for name in ("a-wf", "b-wf"):
        client.workflows.update(name, **A, class_name="Echo", script_name=FLOWS)
    page = client.workflows.list(**A, per_page=2)
    assert [w.name for w in page.result] == ["a-wf", "b-wf"]
    assert sorted(w.name for w in page) == ["a-wf", "b-wf", "echo"]  # follows pages to []
    assert [w.name for w in client.workflows.list(**A, search="b-")] == ["b-wf"]

    deleted = client.workflows.delete("echo", **A)
    assert deleted is not None and deleted.status == "ok"
    with pytest.raises(cloudflare.NotFoundError) as caught:
        client.workflows.get("echo", **A)
    assert caught.value.errors[0].code == 10200


def test_versions_list_get_graph(server: LiveServer) -> None:
    client = server.sdk()
    v1 = client.workflows.update("echo", **A, class_name="Echo", script_name=FLOWS)
    v2 = client.workflows.update("echo", **A, class_name="Counter", script_name=FLOWS)
    assert v1 is not None and v2 is not None
    versions = client.workflows.versions.list("echo", **A)
    assert [v.id for v in versions.result] == [v2.version_id, v1.version_id]
    assert versions.result[0].language == "python" and versions.result[0].has_dag is False
    assert [v.id for v in client.workflows.versions.list("echo", **A, per_page=1)] == [
        v2.version_id,
        v1.version_id,
    ]
    one = client.workflows.versions.get(v1.version_id, **A, workflow_name="echo")
    assert one is not None and one.class_name == "Echo"
    graph = client.workflows.versions.graph(v2.version_id, **A, workflow_name="echo")
    assert graph is not None and graph.graph is None and graph.class_name == "Counter"
    with pytest.raises(cloudflare.NotFoundError):
        client.workflows.versions.get(
            "00000000-0000-4000-8000-000000000000", **A, workflow_name="echo"
        )


def test_instances_create_get_list_bulk(server: LiveServer) -> None:
    client = server.sdk()
    client.workflows.update("echo", **A, class_name="Echo", script_name=FLOWS)
    created = client.workflows.instances.create(
        "echo",
        **A,
        instance_id="one",
        params='{"a": 1}',
        instance_retention={"success_retention": "1 hour"},
        location_hint="weur",
    )
    assert created is not None and created.id == "one" and created.trigger_source == "api"
    done = server.wait_done("echo", "one")
    assert done["status"] == "complete"

    details = client.workflows.instances.get("one", **A, workflow_name="echo")
    assert details is not None
    assert details.params == {"a": 1}
    assert details.output == '{"a":1}'
    assert details.version_id == created.version_id
    assert details.trigger.source == "api" and details.success is True
    assert details.step_count == 1 and details.steps[0].type == "step"
    simple = client.workflows.instances.get("one", **A, workflow_name="echo", simple="true")
    assert simple is not None and simple.steps == [] and simple.step_count == 1

    unnamed = client.workflows.instances.create("echo", **A)
    assert unnamed is not None and len(unnamed.id) == 36

    bulk = client.workflows.instances.bulk(
        "echo", **A, body=[{"instance_id": "one"}, {"instance_id": "b1", "params": "{}"}, {}]
    )
    ids = [item.id for item in bulk]
    assert ids[0] == "b1" and len(ids) == 2  # "one" exists and is skipped

    with pytest.raises(cloudflare.ConflictError) as caught:
        client.workflows.instances.create("echo", **A, instance_id="one")
    assert caught.value.errors[0].code == 10405
    assert caught.value.response.headers["x-should-retry"] == "false"

    listed = client.workflows.instances.list("echo", **A, per_page=2)
    assert len(listed.result) == 2
    assert len(list(listed)) == 4  # the pager adds page=2, 3 and stops at []
    now = datetime.now(UTC)
    in_window = client.workflows.instances.list(
        "echo",
        **A,
        date_start=(now - timedelta(hours=1)).replace(tzinfo=None),
        date_end=now + timedelta(hours=1),
        status="complete",
        direction="asc",
    )
    assert "one" in [i.id for i in in_window.result]
    before = client.workflows.instances.list("echo", **A, date_end=now - timedelta(hours=1))
    assert before.result == []


def test_the_pager_from_a_cursor_iterates_every_remaining_instance(server: LiveServer) -> None:
    client = server.sdk()
    client.workflows.update("echo", **A, class_name="Echo", script_name=FLOWS)
    client.workflows.instances.bulk("echo", **A, body=[{"instance_id": f"i{n}"} for n in range(7)])
    with server.http() as http:
        first = http.get(f"/accounts/{ACCOUNT}/workflows/echo/instances?per_page=2").json()
    cursor = first["result_info"]["cursor"]
    page = client.workflows.instances.list("echo", **A, cursor=cursor, per_page=2)
    # The cursor's page, then page=2, 3... with the same cursor, until an empty page.
    seen = [i.id for i in page]
    shown = [i["id"] for i in first["result"]]
    assert len(seen) == 5 and len(set(seen)) == 5
    assert sorted(seen + shown) == sorted(f"i{n}" for n in range(7))


def test_step_status_and_events(server: LiveServer) -> None:
    client = server.sdk()
    client.workflows.update("tour", **A, class_name="Tour", script_name=FLOWS)
    client.workflows.instances.create("tour", **A, instance_id="t1")
    server.wait_status("tour", "t1", {"waiting"})
    server.wait_step("tour", "t1", "approval-1")

    flaky = client.workflows.instances.step(
        "t1", **A, workflow_name="tour", name="flaky-1", type="step"
    )
    assert flaky is not None and flaky.status == "complete"
    assert flaky.output == {"attempt": 2, "text": "x" * 2000}
    first = client.workflows.instances.step(
        "t1", **A, workflow_name="tour", name="flaky-1", type="step", attempt=1
    )
    assert first is not None and first.status == "errored"
    assert first.error is not None and first.error.message == "first attempt fails"
    secret = client.workflows.instances.step(
        "t1", **A, workflow_name="tour", name="secret-1", type="step"
    )
    assert secret is not None and secret.output == "[REDACTED]"
    waiting = client.workflows.instances.step(
        "t1", **A, workflow_name="tour", name="approval-1", type="waitForEvent"
    )
    assert waiting is not None and waiting.status == "waiting"
    assert waiting.event_type == "approve"
    raw = client.workflows.instances.with_raw_response.step(
        "t1", **A, workflow_name="tour", name="blob-1", type="step"
    )
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.read() == bytes(range(256)) * 1000

    sent = client.workflows.instances.events.create(
        "approve", **A, workflow_name="tour", instance_id="t1", body={"by": "me"}
    )
    assert sent is not None and sent.instance_id == "t1"
    server.wait_done("tour", "t1")
    received = client.workflows.instances.step(
        "t1", **A, workflow_name="tour", name="approval-1", type="waitForEvent"
    )
    assert received is not None and received.status == "complete"
    assert received.output == {"by": "me"}
    details = client.workflows.instances.get("t1", **A, workflow_name="tour", order="desc")
    assert details is not None and details.steps[0].type == "waitForEvent"
    assert details.output == '{"blob":256000,"approved_by":{"by":"me"}}'
    with pytest.raises(cloudflare.NotFoundError) as caught:
        client.workflows.instances.step("t1", **A, workflow_name="tour", name="nope-1", type="step")
    assert caught.value.errors[0].code == 10402


def test_status_edit_every_action(server: LiveServer) -> None:
    client = server.sdk()
    client.workflows.update("waiter", **A, class_name="Waiter", script_name=FLOWS)
    client.workflows.instances.create("waiter", **A, instance_id="w1")
    server.wait_status("waiter", "w1", {"waiting"})
    edit = client.workflows.instances.status.edit
    paused = edit("w1", **A, workflow_name="waiter", status="pause")
    assert paused.status == "paused"
    resumed = edit("w1", **A, workflow_name="waiter", status="resume")
    assert resumed.status == "queued"
    server.wait_status("waiter", "w1", {"waiting"})
    restarted = edit(
        "w1",
        **A,
        workflow_name="waiter",
        status="restart",
        from_={"name": "wait", "type": "waitForEvent"},
    )
    assert restarted.status == "queued"
    server.wait_status("waiter", "w1", {"waiting"})
    terminated = edit("w1", **A, workflow_name="waiter", status="terminate", rollback=True)
    assert terminated.status in ("rollingBack", "terminated")
    details = server.wait_done("waiter", "w1")
    assert details["status"] == "terminated"
    assert details["steps"][-1] == {"type": "termination", "trigger": {"source": "api"}}
    with pytest.raises(cloudflare.ConflictError) as caught:
        edit("w1", **A, workflow_name="waiter", status="terminate")
    assert caught.value.response.headers["x-should-retry"] == "false"
    full = edit("w1", **A, workflow_name="waiter", status="restart")
    assert full.status == "queued"
    server.wait_status("waiter", "w1", {"waiting"})


def test_numeric_and_error_outputs_validate(server: LiveServer) -> None:
    client = server.sdk()
    client.workflows.update("counter", **A, class_name="Counter", script_name=FLOWS)
    client.workflows.update("failing", **A, class_name="Failing", script_name=FLOWS)
    client.workflows.instances.create("counter", **A, instance_id="c1")
    client.workflows.instances.create("failing", **A, instance_id="f1")
    server.wait_done("counter", "c1")
    server.wait_done("failing", "f1")
    counted = client.workflows.instances.get("c1", **A, workflow_name="counter")
    assert counted is not None and counted.output == 42
    failed = client.workflows.instances.get("f1", **A, workflow_name="failing")
    assert failed is not None and failed.success is False
    assert failed.error is not None and failed.error.name == "NonRetryableError"
    assert failed.output == ""
    step = client.workflows.instances.step(
        "f1", **A, workflow_name="failing", name="doomed-1", type="step"
    )
    assert step is not None and step.status == "errored"
