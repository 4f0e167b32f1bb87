"""Registration, versions, the workers shim, storage URLs, concurrency and input checks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stepstone import Engine, WorkerSettings, WorkflowEntrypoint
from stepstone.errors import InvalidWorkflowDefinition, InvalidWorkflowName, WorkflowNotFound
from stepstone.project import ProjectConfigError, load_project
from stepstone.storage import InvalidDatabaseURL, open_storage
from tests.engine import flows
from tests.engine.conftest import LoopPasses, wait_for


class Timed(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        payload = event["payload"]
        if payload.get("until_ms") is not None:
            await step.sleep_until("alarm", payload["until_ms"])
        else:
            await step.sleep_until("alarm", datetime.fromisoformat(payload["until"]))
        return "rang"


class Misuse(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        kind = event["payload"]
        try:
            if kind == "name":
                await step.do("bad\x00name", lambda: 1)
            elif kind == "event":
                await step.wait_for_event("w", "has.dot")
            elif kind == "duration":
                await step.sleep("s", "ten minutes")
            elif kind == "sleep-too-long":
                await step.sleep("s", "366 days")
        except Exception as exc:
            return {"name": type(exc).__name__, "message": str(exc)}
        return "accepted"


async def test_cloudflare_style_code_runs_unchanged(engine: Engine) -> None:
    await engine.register(
        "greeter", class_name="Greeter", script_name="tests.engine.cf_style.greeter"
    )
    handle = await engine.workflow("greeter").create(params={"name": "ada"})
    assert (await handle.wait(10))["output"] == "hello ada"
    bad = await engine.workflow("greeter").create(params={"name": ""})
    assert (await bad.wait(10))["error"] == {"name": "NonRetryableError", "message": "no name"}


async def test_each_registration_adds_a_version_and_instances_keep_theirs(engine: Engine) -> None:
    first = await engine.register("versioned", flows.Approval)
    handle = await engine.workflow("versioned").create(id="v1")
    second = await engine.register("versioned", flows.Sequential)
    assert first.version.id != second.version.id
    _, record = await engine.ops.instance("default", "versioned", "v1")
    assert record.version_id == first.version.id
    versions, total = await engine.storage.list_versions(second.pk, 0, 10)
    assert total == 2 and [v.id for v in versions] == [second.version.id, first.version.id]
    await wait_for(handle, "waiting")


async def test_registration_rejects_bad_definitions(engine: Engine) -> None:
    with pytest.raises(InvalidWorkflowName):
        await engine.register("bad name", flows.Sequential)
    with pytest.raises(InvalidWorkflowDefinition, match="cannot import"):
        await engine.register("ghost", class_name="Nope", script_name="no_such_module_here")
    with pytest.raises(InvalidWorkflowDefinition, match="not a Python module path"):
        await engine.register("trick", class_name="X", script_name="../../etc/passwd")
    with pytest.raises(InvalidWorkflowDefinition, match="not a valid cron"):
        await engine.register("cron", flows.Sequential, schedules=["every day"])
    with pytest.raises(InvalidWorkflowDefinition, match="cannot be scheduled"):
        await engine.register("cron", flows.Sequential, schedules=["@daily"])
    assert await engine.storage.get_workflow("default", "ghost") is None


async def test_sleep_until_takes_datetimes_and_epoch_ms(engine: Engine) -> None:
    await engine.register("timed", Timed)
    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    a = await engine.workflow("timed").create(params={"until": soon.isoformat()})
    b = await engine.workflow("timed").create(params={"until_ms": int(soon.timestamp() * 1000)})
    assert (await a.wait(10))["output"] == (await b.wait(10))["output"] == "rang"
    past = await engine.workflow("timed").create(params={"until_ms": 1_000})
    status = await past.wait(10)
    assert status["error"]["name"] == "ValueError"
    assert "in the past" in status["error"]["message"]


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("name", "control characters"),
        ("event", "'.' is not supported"),
        ("duration", "is not a duration such as"),
        ("sleep-too-long", "365 days"),
    ],
)
async def test_misuse_raises_a_clear_fatal_error(engine: Engine, kind: str, needle: str) -> None:
    await engine.register("misuse", Misuse)
    handle = await engine.workflow("misuse").create(params=kind)
    output = (await handle.wait(10))["output"]
    assert output["name"] == "WorkflowFatalError"
    assert needle in output["message"]


async def test_concurrency_limit_queues_the_rest(
    backend_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    flows.CALLS.clear()
    flows.GATES.clear()
    async with await Engine.open(
        backend_url, worker_settings=WorkerSettings(concurrency=2, poll_ms=20)
    ) as engine:
        assert engine.worker is not None
        passes = LoopPasses(engine.worker, monkeypatch)
        await engine.register("blocking", flows.Blocking)
        handles = [
            await engine.workflow("blocking").create(id=f"c{i}", params={"gate": "shared"})
            for i in range(5)
        ]
        async with asyncio.timeout(10):
            while flows.CALLS["holding"] < 2:
                await asyncio.sleep(0.01)
        await passes.more()  # the worker had a whole pass to claim more, had the limit let it
        statuses = [(await h.status())["status"] for h in handles]
        assert statuses.count("running") == 2
        assert statuses.count("queued") == 3
        flows.gate("shared").set()
        for handle in handles:
            assert (await handle.wait(10))["status"] == "complete"
        assert flows.CALLS["max-holding"] == 2


async def test_a_capped_workflows_next_instance_starts_when_one_ends(backend_url: str) -> None:
    # The poll is an hour away: only the end of the running instance can start the next one.
    async with await Engine.open(
        backend_url, worker_settings=WorkerSettings(concurrency=10, poll_ms=3_600_000)
    ) as engine:
        await engine.ops.put_workflow(
            "default",
            "capped",
            class_name=flows.Sequential.__qualname__,
            script_name=flows.Sequential.__module__,
            concurrency_limit=1,
        )
        handles = [
            await engine.workflow("capped").create(id=f"c{i}", params={"n": 1}) for i in range(3)
        ]
        for handle in handles:
            assert (await handle.wait(10))["status"] == "complete"


async def test_woken_instances_go_before_new_ones(backend_url: str) -> None:
    async with await Engine.open(backend_url, run_worker=False) as engine:
        await engine.register("approval", flows.Approval)
        storage = engine.storage
        workflow = await engine.ops.workflow("default", "approval")
        await engine.workflow("approval").create(id="old")
        claims = await storage.claim_runnable("w", 1, engine.ops.now(), 10_000, None)
        from stepstone.storage.base import Release

        now = engine.ops.now()
        await storage.release_instance(claims[0], Release("waiting", runnable_at=now + 100), now)
        await engine.workflow("approval").create(id="new")
        # Claimed as of a moment after both are runnable, instead of waiting for it.
        later = max(now + 150, engine.ops.now())
        order = await storage.claim_runnable("w", 2, later, 10_000, [workflow.pk])
        assert [c.instance.id for c in order] == ["old", "new"]


def test_database_urls(tmp_path: Path) -> None:
    assert open_storage("memory://").url == "memory://"
    open_storage(f"sqlite:///{tmp_path}/a.db")
    open_storage("sqlite:///relative/a.db?synchronous=NORMAL")
    for bad, needle in [
        ("", "not a database URL"),
        ("stepstone.db", "not a database URL"),
        ("mysql://x/y", "unsupported database URL scheme"),
        ("sqlite://host/a.db", "no host"),
        ("sqlite:///", "names no file"),
        ("sqlite:///a.db?synchronous=SOMETIMES", "synchronous must be"),
        ("sqlite:///a.db?cache=yes", "unknown options"),
    ]:
        with pytest.raises(InvalidDatabaseURL, match=needle):
            open_storage(bad)


def test_project_file_errors(tmp_path: Path) -> None:
    file = tmp_path / "stepstone.toml"
    file.write_text('[[workflows]]\nname = "a"\nclass_name = "A"\n')
    with pytest.raises(ProjectConfigError, match="missing script_name"):
        load_project(file)
    file.write_text('[[workflows]]\nname = "a"\nclass_name = "A"\nscript_name = "m"\ncolour = 1\n')
    with pytest.raises(ProjectConfigError, match="unknown keys"):
        load_project(file)
    file.write_text("not = [toml")
    with pytest.raises(ProjectConfigError):
        load_project(file)
    with pytest.raises(ProjectConfigError, match="no such file"):
        load_project(tmp_path / "missing.toml")


async def test_max_running_holds_across_workers(
    backend_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend_url == "memory://":
        pytest.skip("two engines cannot share an in-memory store")
    flows.CALLS.clear()
    flows.GATES.clear()
    settings = WorkerSettings(concurrency=10, max_running=2, poll_ms=20)
    async with (
        await Engine.open(backend_url, worker_settings=settings) as first,
        await Engine.open(backend_url, worker_settings=settings) as second,
    ):
        await first.register("blocking", flows.Blocking)
        assert second.worker is not None
        second.worker.invalidate_workflows()  # both workers compete for the instances
        assert first.worker is not None
        passes = [LoopPasses(w, monkeypatch) for w in (first.worker, second.worker)]
        handles = [
            await first.workflow("blocking").create(id=f"m{i}", params={"gate": "cap"})
            for i in range(6)
        ]
        async with asyncio.timeout(10):
            while flows.CALLS["holding"] < 2:
                await asyncio.sleep(0.01)
        for worker_passes in passes:  # each worker had a whole pass to claim more
            await worker_passes.more()
        statuses = [(await h.status())["status"] for h in handles]
        assert (statuses.count("running"), statuses.count("queued")) == (2, 4)
        assert flows.CALLS["max-holding"] == 2
        flows.gate("cap").set()
        for handle in handles:
            assert (await handle.wait(15))["status"] == "complete"
        assert flows.CALLS["max-holding"] == 2


async def test_a_create_after_another_process_registered_again_takes_the_new_version(
    backend_url: str,
) -> None:
    """Creates keep the workflow they looked up, so a version registered since, by another
    process, is found by the store's check rather than by a lookup per create."""
    if backend_url == "memory://":
        pytest.skip("two engines cannot share an in-memory store")
    async with (
        await Engine.open(backend_url, run_worker=False) as here,
        await Engine.open(backend_url, run_worker=False) as elsewhere,
    ):
        account = here.project.account_id
        await here.register("flow", Timed)
        await here.workflow("flow").create(id="before")
        await elsewhere.register("flow", Misuse)
        # Several at once each meet the changed version and look again.
        together = [f"after-{n}" for n in range(4)]
        await asyncio.gather(*(here.workflow("flow").create(id=i) for i in together))
        await here.workflow("flow").create(id="after")
        current = await here.ops.workflow(account, "flow")
        before, *afters = [
            await here.storage.get_instance(current.pk, i) for i in ("before", "after", *together)
        ]
        assert before is not None and all(a is not None for a in afters)
        assert {a.version_id for a in afters if a} == {current.version.id}
        assert current.version.id != before.version_id
        await elsewhere.ops.delete_workflow(account, "flow")
        with pytest.raises(WorkflowNotFound):
            await here.workflow("flow").create(id="gone")
