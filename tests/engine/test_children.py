"""step.run_workflow: a child instance as a step, on every backend (a Stepstone extension)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cloudflare.types.workflows import InstanceGetResponse

from stepstone import Engine, NonRetryableError, WorkerSettings, WorkflowEntrypoint, views
from stepstone.model.actors import Actor
from stepstone.model.ops_records import AuditQuery
from stepstone.views import links_fields
from tests.engine.conftest import steps_of, wait_for
from tests.scale.test_workers import Cluster

RUNS: Counter[str] = Counter()
NO_RETRY = {"retries": {"limit": 0, "delay": 0, "backoff": "constant"}}


class Doubler(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        RUNS[f"child-{event.instance_id}"] += 1
        return {"doubled": event.payload["n"] * 2}


class Gated(WorkflowEntrypoint):
    """Waits for an event: the parent must wait for it without holding its activation."""

    async def run(self, event: Any, step: Any) -> Any:
        got = await step.wait_for_event("go", "go", timeout="1 hour")
        return {"got": got["payload"]}


class Failing(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        RUNS["failing"] += 1
        if event.payload.get("fatal"):
            raise NonRetryableError("no point retrying")
        raise ValueError(f"child {event.instance_id} broke")


class Parent(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        RUNS[f"parent-{event.instance_id}"] += 1
        options = event.payload or {}
        before = await step.do("before", lambda: "b")
        try:
            result = await step.run_workflow(
                "child",
                options.get("workflow", "doubler"),
                {"n": 21, **options.get("params", {})},
                id=options.get("id"),
                timeout=options.get("timeout", "24 hours"),
                config=options.get("config"),
                detached=options.get("detached", False),
            )
        except Exception as exc:  # the child's error is the step's error
            return {"error": type(exc).__name__, "message": str(exc)}
        after = await step.do("after", lambda: "a")
        return {"result": result, "before": before, "after": after}


WORKFLOWS = {
    "doubler": Doubler,
    "gated": Gated,
    "failing": Failing,
    "parent": Parent,
}


@pytest.fixture
async def engine(backend_url: str) -> AsyncIterator[Engine]:
    RUNS.clear()
    # A poll far longer than any test: only the wake path can take a parent up again.
    eng = await Engine.open(
        backend_url, worker_settings=WorkerSettings(concurrency=10, poll_ms=600_000)
    )
    for name, cls in WORKFLOWS.items():
        await eng.register(name, cls)
    try:
        yield eng
    finally:
        await eng.close()


async def _child(engine: Engine, workflow: str, instance_id: str) -> dict[str, Any]:
    return await (await engine.workflow(workflow).get(instance_id)).status()


async def test_the_child_output_is_the_step_output_and_both_are_linked(engine: Engine) -> None:
    handle = await engine.workflow("parent").create(id="p1")
    status = await handle.wait(10)
    assert status["output"] == {"result": {"doubled": 42}, "before": "b", "after": "a"}
    step = (await steps_of(engine, "parent", "p1"))[("do", "child-1")]
    assert step.success and orjson.loads(step.output or b"") == {"doubled": 42}
    _, parent = await engine.ops.instance("default", "parent", "p1")
    links = await engine.storage.instance_links(parent.pk)
    assert links.parent is None
    [child] = links.children
    assert (child.workflow, child.status, child.detached) == ("doubler", "complete", False)
    assert child.id.startswith("p1-")
    _, record = await engine.ops.instance("default", "doubler", child.id)
    assert record.trigger_source == "binding"
    back = await engine.storage.instance_links(record.pk)
    assert back.parent is not None and (back.parent.workflow, back.parent.id) == ("parent", "p1")
    assert RUNS[f"child-{child.id}"] == 1
    assert links_fields(links) == {
        "stepstone": {
            "parent": None,
            "children": [
                {"workflow": "doubler", "id": child.id, "status": "complete", "detached": False}
            ],
        }
    }
    assert links_fields(back)["stepstone"]["parent"] == {
        "workflow": "parent",
        "id": "p1",
        "status": "complete",
    }
    # The official SDK's strict models take the details with the extension key added.
    details = views.instance_details(parent, await engine.ops.history(parent))
    details.update(links_fields(links))
    model = InstanceGetResponse.model_validate_json(orjson.dumps(details), strict=True)
    assert model.status == "complete" and model.model_extra is not None
    assert model.model_extra["stepstone"]["children"][0]["id"] == child.id
    alone = await engine.workflow("doubler").create(params={"n": 1})
    await alone.wait(10)
    _, lone = await engine.ops.instance("default", "doubler", alone.id)
    assert links_fields(await engine.storage.instance_links(lone.pk)) == {}


async def test_a_given_id_names_the_child(engine: Engine) -> None:
    handle = await engine.workflow("parent").create(id="p2", params={"id": "my-child"})
    assert (await handle.wait(10))["output"]["result"] == {"doubled": 42}
    assert (await _child(engine, "doubler", "my-child"))["output"] == {"doubled": 42}


async def test_the_parent_waits_released_and_wakes_when_the_child_ends(engine: Engine) -> None:
    handle = await engine.workflow("parent").create(id="p3", params={"workflow": "gated"})
    _, parent = await engine.ops.instance("default", "parent", "p3")
    links = await _wait_children(engine, parent.pk, 1)
    child = await engine.workflow("gated").get(links[0])
    await wait_for(child, "waiting")
    # The parent holds no activation while its child waits: released, as a sleep is.
    assert (await wait_for(handle, "waiting"))["status"] == "waiting"
    await child.send_event(type="go", payload={"ok": True})
    status = await handle.wait(10)
    assert status["output"]["result"] == {"got": {"ok": True}}
    # Replays of the parent never created a second child, nor ran its earlier step again.
    assert len(await _wait_children(engine, parent.pk, 1)) == 1
    assert RUNS["parent-p3"] >= 2


async def test_a_failed_child_is_the_step_error_retried_with_a_fresh_child(
    engine: Engine,
) -> None:
    config = {"retries": {"limit": 1, "delay": 0, "backoff": "constant"}}
    handle = await engine.workflow("parent").create(
        id="p4", params={"workflow": "failing", "config": config}
    )
    status = await handle.wait(10)
    assert status["output"]["error"] == "ValueError"
    assert "broke" in status["output"]["message"]
    _, parent = await engine.ops.instance("default", "parent", "p4")
    children = (await engine.storage.instance_links(parent.pk)).children
    assert [c.status for c in children] == ["errored", "errored"]
    assert children[1].id == children[0].id + "-r2"
    step = (await steps_of(engine, "parent", "p4"))[("do", "child-1")]
    assert [a.success for a in step.attempts] == [False, False]
    assert step.error is not None and step.error["name"] == "ValueError"


async def test_a_non_retryable_child_error_is_not_retried(engine: Engine) -> None:
    config = {"retries": {"limit": 3, "delay": 0, "backoff": "constant"}}
    handle = await engine.workflow("parent").create(
        id="p5", params={"workflow": "failing", "config": config, "params": {"fatal": True}}
    )
    assert (await handle.wait(10))["output"]["error"] == "NonRetryableError"
    assert RUNS["failing"] == 1


async def test_an_unknown_workflow_fails_the_step(engine: Engine) -> None:
    handle = await engine.workflow("parent").create(id="p6", params={"workflow": "nope"})
    output = (await handle.wait(10))["output"]
    assert output["error"] == "StepError" or "nope" in output["message"]
    assert "nope" in output["message"]


async def test_a_child_that_outlives_the_timeout_fails_the_step(engine: Engine) -> None:
    handle = await engine.workflow("parent").create(
        id="p7", params={"workflow": "gated", "timeout": "1 second", "config": NO_RETRY}
    )
    output = (await handle.wait(10))["output"]
    assert output["error"] == "WorkflowTimeoutError"


async def test_a_bad_timeout_is_a_clear_error(engine: Engine) -> None:
    handle = await engine.workflow("parent").create(id="p8", params={"timeout": "10 ms"})
    output = (await handle.wait(10))["output"]
    assert "between 1 second and 365 days" in output["message"]


@pytest.mark.parametrize("detached", [False, True])
async def test_terminating_the_parent_terminates_its_running_children(
    engine: Engine, detached: bool
) -> None:
    handle = await engine.workflow("parent").create(
        id="p9", params={"workflow": "gated", "detached": detached}
    )
    _, parent = await engine.ops.instance("default", "parent", "p9")
    [child_id] = await _wait_children(engine, parent.pk, 1)
    child = await engine.workflow("gated").get(child_id)
    await wait_for(child, "waiting")
    # The parent's terminate alone reaches the child: no other call is needed.
    await handle.terminate()
    expected = "waiting" if detached else "terminated"
    assert (await child.status())["status"] == expected
    # Asked again, nothing is left to stop.
    assert await engine.ops.terminate_children("default", parent.pk) == []
    links = await engine.storage.instance_links(parent.pk)
    assert [(c.id, c.detached) for c in links.children] == [(child_id, detached)]


async def test_a_cascaded_terminate_is_audited_as_the_parent_terminator(engine: Engine) -> None:
    await engine.workflow("parent").create(id="p10", params={"workflow": "gated"})
    _, parent = await engine.ops.instance("default", "parent", "p10")
    [child_id] = await _wait_children(engine, parent.pk, 1)
    await wait_for(await engine.workflow("gated").get(child_id), "waiting")
    amy = Actor("token", "amy", "tok-amy")
    await engine.ops.terminate("default", "parent", "p10", actor=amy)
    log = await engine.storage.list_audit(AuditQuery("default", actions=("terminate",)))
    assert {(e.workflow_name, e.instance_id, e.actor_id) for e in log} == {
        ("parent", "p10", "tok-amy"),
        ("gated", child_id, "tok-amy"),
    }


async def _wait_children(
    engine: Engine, parent_pk: int, count: int, timeout: float = 10
) -> list[str]:
    async with asyncio.timeout(timeout):
        while True:
            links = await engine.storage.instance_links(parent_pk)
            if len(links.children) >= count:
                return [c.id for c in links.children]
            await asyncio.sleep(0.01)


CLUSTER_CONFIG = """
[[workflows]]
name = "parent"
class_name = "Parent"
script_name = "tests.engine.test_children"

[[workflows]]
name = "gated"
class_name = "Gated"
script_name = "tests.engine.test_children"
"""


@pytest.mark.slow
async def test_two_workers_on_postgresql_take_the_parent_up_when_the_child_ends(
    pg_database: str, tmp_path: Path
) -> None:
    cluster = Cluster(pg_database, tmp_path)
    cluster.config.write_text(CLUSTER_CONFIG)
    try:
        cluster.start(2, concurrency=10)
        # The test process is the API only: it runs no worker, so every step, and every wake
        # of a parent, happens in the worker processes.
        api = await Engine.open(cluster.url, config=cluster.config, run_worker=False)
        try:
            for name, end in (("ok", "event"), ("stopped", "terminate")):
                params = {"workflow": "gated", "config": NO_RETRY}
                handle = await api.workflow("parent").create(id=name, params=params)
                _, parent = await api.ops.instance("default", "parent", name)
                [child_id] = await _wait_children(api, parent.pk, 1, timeout=30)
                child = await api.workflow("gated").get(child_id)
                await wait_for(child, "waiting", timeout=30)
                await wait_for(handle, "waiting", timeout=30)
                since = time.monotonic()
                if end == "event":
                    await child.send_event(type="go", payload={"n": 1})
                else:  # ended by this process, which has no worker: only a NOTIFY wakes one
                    await child.terminate()
                status = await handle.wait(30)
                print(f"\n{end}: parent ended {(time.monotonic() - since) * 1000:.0f} ms later")
                if end == "event":
                    assert status["output"]["result"] == {"got": {"n": 1}}, cluster.logs()
                else:
                    assert status["output"]["error"] == "StepError", cluster.logs()
                    assert "was terminated" in status["output"]["message"]
        finally:
            await api.close()
    finally:
        cluster.stop()
