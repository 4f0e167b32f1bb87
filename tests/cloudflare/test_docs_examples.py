"""Cloudflare's own Python Workflows examples, run unchanged (issue 12).

Each example is kept verbatim in a string, with the page it came from (cloudflare/cloudflare-docs
``src/content/docs/workflows/python/`` and cloudflare/workerd
``src/workerd/server/tests/python/workflow-entrypoint/``). A test writes it into a Cloudflare
project (``wrangler.toml`` naming the class, the code as ``main``) and runs it on the real engine
with a SQLite file; a Worker example's fetch is served by the real Worker app in this process.

A fragment (a bare ``async def run``, a statement) is put into the smallest module that can hold
it (`fragment()` shows exactly what is added); a service Stepstone cannot have (D1, Stripe, email)
is a stub in the surrounding module, and the example then counts as needing a binding. Examples
that fail everywhere (placeholder bodies, undefined names) are run too: Stepstone must fail the
same way Cloudflare does. docs/compatibility.md, "Cloudflare's Python docs examples", has the table.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stepstone import Engine, WorkerSettings
from stepstone.cloudflare.worker_app import WorkerApp
from stepstone.engine.clock import ManualClock
from stepstone.errors import InvalidWorkflowDefinition
from stepstone.project import ProjectConfigError, load_project
from stepstone.storage.base import InstanceQuery
from tests.cloudflare.docs_examples.snippets import (
    API_CONFIG,
    API_CREATE_VIA_BINDING,
    API_ERROR_HANDLING,
    API_FIRST_STEP,
    API_NON_RETRYABLE,
    API_ROLLBACK,
    API_SKELETON,
    API_SLEEP,
    API_SLEEP_UNTIL,
    API_WAIT_FOR_EVENT,
    BINDINGS_CREATE,
    BINDINGS_CREATE_BATCH,
    BINDINGS_GET,
    BINDINGS_PAYLOAD,
    BINDINGS_SEND_EVENT,
    BINDINGS_WRANGLER,
    DAG,
    DAG_2026_01,
    DAG_LIVE,
    INDEX_SKELETON,
    INDEX_STARTER,
    INDEX_STARTER_2026_02,
    INDEX_STARTER_LIVE,
    INDEX_WRANGLER,
    INDEX_WRANGLER_TOML_2026_02,
    OVERVIEW_SKELETON,
    RUN_CONFIG,
    RUN_FIRST_STEP,
    RUN_NON_RETRYABLE,
    WORKERD_IMPLICIT,
    WORKERD_LEGACY,
    WORKERD_LEGACY_NO_CTX,
)

# --- the surrounding project ------------------------------------------------------------------

# What a fragment needs around it, and nothing more: the imports its page shows elsewhere, and a
# class for a bare `async def run`.
WORKFLOW_IMPORTS = "from workers import WorkflowEntrypoint\n"
WORKER_IMPORTS = "from workers import Response, WorkerEntrypoint, WorkflowEntrypoint\n"


def method(fragment: str, class_name: str = "Example", header: str = WORKFLOW_IMPORTS) -> str:
    """A bare ``async def run`` as the one method of the smallest WorkflowEntrypoint class."""
    return f"{header}\n\nclass {class_name}(WorkflowEntrypoint):\n" + textwrap.indent(
        fragment, "    "
    )


def in_fetch(fragment: str, header: str = WORKER_IMPORTS) -> str:
    """Statements using ``env`` (top-level await on the page) as the body of an ``on_fetch``."""
    imports = [line for line in fragment.splitlines() if line.startswith(("from ", "import "))]
    body = "\n".join(line for line in fragment.splitlines() if line not in imports)
    return (
        header
        + "\n".join(imports)
        + "\n\n\nasync def on_fetch(request, env, ctx):\n"
        + textwrap.indent(body, "    ", lambda line: True)
        + '\n    return Response("done")\n'
    )


def wrangler(module: str, workflows: dict[str, str], date: str = "2026-08-01") -> str:
    """A wrangler.toml for ``src/<module>.py`` binding each class as ``binding -> class``."""
    tables = "".join(
        f'\n[[workflows]]\nname = "{binding.lower().replace("_", "-")}"\n'
        f'binding = "{binding}"\nclass_name = "{cls}"\n'
        for binding, cls in workflows.items()
    )
    return (
        f'name = "docs-example"\nmain = "src/{module}.py"\n'
        f'compatibility_date = "{date}"\n'
        'compatibility_flags = ["python_workers", "python_workflows"]\n' + tables
    )


_COUNTER = iter(range(1_000_000))


@dataclass
class Project:
    folder: Path
    module: str

    def write(self, code: str, config: str, config_name: str = "wrangler.toml") -> Path:
        (self.folder / "src").mkdir(exist_ok=True)
        (self.folder / "src" / f"{self.module}.py").write_text(code)
        path = self.folder / config_name
        path.write_text(config.replace("src/entry.py", f"src/{self.module}.py"))
        return path


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    # Every example is `main` of its own project; a module name per test keeps sys.modules from
    # handing one test's module to the next (they share one process).
    module = f"docs_example_{next(_COUNTER)}_{tmp_path.name[-12:].replace('-', '_')}"
    module = "".join(c if c.isalnum() or c == "_" else "_" for c in module)
    yield Project(tmp_path, module)
    sys.modules.pop(module, None)
    src = str(tmp_path / "src")
    while src in sys.path:
        sys.path.remove(src)


FAST = WorkerSettings(concurrency=10, poll_ms=20, lease_ms=5_000)


async def open_engine(config: Path, clock: ManualClock | None = None) -> Engine:
    return await Engine.open(
        f"sqlite:///{config.parent / 'stepstone.db'}",
        config=config,
        worker_settings=FAST,
        clock=clock,
    )


async def steps(engine: Engine, workflow: str, instance_id: str) -> dict[Any, Any]:
    _, record = await engine.ops.instance("default", workflow, instance_id)
    return dict((await engine.ops.history(record)).steps)


async def listed(engine: Engine, workflow: str) -> list[Any]:
    record = await engine.ops.workflow("default", workflow)
    rows, _ = await engine.ops.instance_page(record.pk, InstanceQuery(limit=100))
    return rows


async def until(engine: Engine, workflow: str, instance_id: str, *statuses: str) -> dict[str, Any]:
    handle = await engine.workflow(workflow).get(instance_id)
    async with asyncio.timeout(15):
        while True:
            status = await handle.status()
            if status["status"] in statuses:
                return status
            await asyncio.sleep(0.02)


@pytest.fixture
async def worker_client() -> AsyncIterator[Any]:
    """``client(engine)``: an httpx client on the project's Worker, served in this process."""
    apps: list[WorkerApp] = []
    clients: list[httpx.AsyncClient] = []

    def make(engine: Engine) -> httpx.AsyncClient:
        assert engine.project.main_module is not None
        app = WorkerApp(engine.project.main_module, engine.env())
        apps.append(app)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app.asgi), base_url="http://worker"
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    for app in apps:
        await app.stop(1)


# --- placeholders and statements that are not Python ------------------------------------------


@pytest.mark.parametrize(
    "code",
    [INDEX_SKELETON, API_SKELETON, OVERVIEW_SKELETON, RUN_NON_RETRYABLE],
    ids=["index-skeleton", "api-skeleton", "overview-skeleton", "run-throw"],
)
async def test_placeholders_are_not_python_anywhere(project: Project, code: str) -> None:
    # A method whose body is only a comment (and `throw`) is a SyntaxError in any Python:
    # Cloudflare's Pyodide refuses the module as CPython does. Stepstone must say so, not hang.
    config = project.write(code, wrangler(project.module, {"MY_WORKFLOW": "MyWorkflow"}))
    with pytest.raises(SyntaxError):
        compile(code, "entry.py", "exec")
    engine = await open_engine(config)
    try:
        binding = engine.env().MY_WORKFLOW
        with pytest.raises(
            InvalidWorkflowDefinition,
            match=r"cannot import module .*(expected an indented block|invalid syntax)",
        ):
            await binding.create()
    finally:
        await engine.close()


# --- python-workers-api.mdx, run.mdx, dag.mdx ------------------------------------------------


def output(step: Any) -> Any:
    import orjson

    return None if step.output is None else orjson.loads(step.output)


async def test_index_starter_fails_as_on_cloudflare(project: Project, worker_client: Any) -> None:
    # `await_step` is defined nowhere on the page: Cloudflare's run() raises NameError too. The
    # page's wrangler.jsonc (date 2024-03-29, the `experimental` flag) and its `on_fetch(request,
    # env)` are read as they are.
    config = project.write(INDEX_STARTER, INDEX_WRANGLER, "wrangler.jsonc")
    engine = await open_engine(config)
    try:
        response = await worker_client(engine).get("/")
        assert response.status_code == 200
        assert response.text == "Hello world!"
        [created] = await listed(engine, "workflows-demo")
        status = await until(engine, "workflows-demo", created.id, "errored")
        assert status["error"]["name"] == "NameError"
        assert "await_step" in status["error"]["message"]
        assert await steps(engine, "workflows-demo", created.id) == {}
    finally:
        await engine.close()


async def test_first_step(project: Project) -> None:
    config = project.write(API_FIRST_STEP, wrangler(project.module, {"MY_WORKFLOW": "MyWorkflow"}))
    engine = await open_engine(config)
    try:
        instance = await engine.env().MY_WORKFLOW.create(id="first")
        status = await until(engine, "my-workflow", instance.id, "complete")
        # run() returns nothing; the step's output is recorded.
        assert status["output"] is None
        recorded = await steps(engine, "my-workflow", "first")
        assert output(recorded[("do", "my first step-1")]) == "Hello World!"
    finally:
        await engine.close()


@pytest.mark.parametrize(
    "code", [RUN_FIRST_STEP, method(RUN_CONFIG, header="")], ids=["run-first-step", "run-config"]
)
async def test_on_run_pages_are_an_older_api(project: Project, code: str) -> None:
    # run.mdx and overview.mdx name the handler `on_run`; workerd calls `run` (its
    # WorkflowEntrypoint has no on_run), so these fail on Cloudflare today, and here.
    if code is not RUN_FIRST_STEP:
        code = WORKFLOW_IMPORTS + RUN_CONFIG
    cls = "MyWorkflow" if "MyWorkflow" in code else "DemoWorkflowClass"
    config = project.write(code, wrangler(project.module, {"MY_WORKFLOW": cls}))
    engine = await open_engine(config)
    try:
        instance = await engine.env().MY_WORKFLOW.create(id="old")
        status = await until(engine, "my-workflow", instance.id, "errored")
        assert status["error"]["name"] == "NotImplementedError"
    finally:
        await engine.close()


async def test_sleep_fragment(project: Project) -> None:
    clock = ManualClock()
    config = project.write(method(API_SLEEP), wrangler(project.module, {"NAP": "Example"}))
    engine = await open_engine(config, clock)
    try:
        await engine.env().NAP.create(id="nap")
        await until(engine, "nap", "nap", "waiting")
        nap = (await steps(engine, "nap", "nap"))[("sleep", "my-sleep-step-1")]
        assert nap.wake_at - nap.start == 10_000
        clock.advance(10_000)
        await until(engine, "nap", "nap", "complete")
    finally:
        await engine.close()


async def test_sleep_until_fragment(project: Project) -> None:
    # The fragment uses `datetime` without importing it: the wrapper adds `import datetime`.
    clock = ManualClock()
    code = "import datetime\n" + method(API_SLEEP_UNTIL)
    config = project.write(code, wrangler(project.module, {"NAP": "Example"}))
    engine = await open_engine(config, clock)
    try:
        await engine.env().NAP.create(id="nap")
        await until(engine, "nap", "nap", "waiting")
        nap = (await steps(engine, "nap", "nap"))[("sleep", "my-sleep-step-1")]
        # datetime.now() is real time, a little after the fake clock's start.
        assert 10_000 <= nap.wake_at - nap.start <= 15_000
        clock.advance(15_000)
        await until(engine, "nap", "nap", "complete")
    finally:
        await engine.close()


async def test_wait_for_event_fragment(project: Project) -> None:
    config = project.write(
        method(API_WAIT_FOR_EVENT), wrangler(project.module, {"WAITER": "Example"})
    )
    engine = await open_engine(config)
    try:
        instance = await engine.env().WAITER.create(id="w")
        await until(engine, "waiter", "w", "waiting")
        wait = (await steps(engine, "waiter", "w"))[("waitForEvent", "my-wait-for-event-step-1")]
        # The documented default timeout: 24 hours.
        assert wait.wake_at - wait.start == 24 * 3600 * 1000
        await instance.send_event(type="my-event-type", payload={"ok": True})
        await until(engine, "waiter", "w", "complete")
    finally:
        await engine.close()


# The services the saga example calls, which no self-hosted engine has: a module-level `env`
# (the example uses a bare `env`, which is not defined in a Python Worker either).
SAGA_STUBS = """
from workers.workflows import NonRetryableError

CALLS = []


class _Orders:
    async def insert(self, row):
        CALLS.append(("insert", row["user_id"]))
        return {"id": "order-1", "total": 25}

    async def delete(self, order_id):
        CALLS.append(("delete", order_id))


class _Charges:
    async def create(self, amount, customer):
        CALLS.append(("charge", amount))
        return {"id": "ch-1"}


class _Refunds:
    async def create(self, charge):
        CALLS.append(("refund", charge))


class _Email:
    async def send(self, to, template, order_id):
        CALLS.append(("email", to))
        if to.endswith("@bounce.invalid"):
            raise NonRetryableError("mailbox does not exist")


class _Namespace:
    def __init__(self, **members):
        self.__dict__.update(members)


env = _Namespace(
    DB=_Namespace(orders=_Orders()),
    STRIPE=_Namespace(charges=_Charges(), refunds=_Refunds()),
    EMAIL=_Email(),
)
"""


@pytest.mark.parametrize("email", ["ada@example.com", "ada@bounce.invalid"])
async def test_rollback_saga_with_stub_services(project: Project, email: str) -> None:
    config = project.write(
        WORKFLOW_IMPORTS + SAGA_STUBS + "\n\n" + API_ROLLBACK,
        wrangler(project.module, {"ORDERS": "OrderWorkflow"}),
    )
    engine = await open_engine(config)
    try:
        params = {"user_id": "u1", "items": ["A1"], "email": email}
        await engine.env().ORDERS.create(id="o", params=params)
        calls = sys.modules[project.module].CALLS
        if email.endswith("example.com"):
            await until(engine, "orders", "o", "complete")
            assert calls == [("insert", "u1"), ("charge", 25), ("email", email)]
        else:
            status = await until(engine, "orders", "o", "errored")
            assert status["error"] == {
                "name": "NonRetryableError",
                "message": "mailbox does not exist",
            }
            # LIFO compensation of the two steps that ran; the failed email had no undo.
            assert calls[-2:] == [("refund", "ch-1"), ("delete", "order-1")]
    finally:
        await engine.close()


async def test_error_handling_fragment(project: Project) -> None:
    # The step fails every attempt (default: 5 retries, 10 s apart, doubling); the fake clock
    # moves through the retry delays, then run() catches the TypeError and completes.
    clock = ManualClock()
    config = project.write(
        method(API_ERROR_HANDLING), wrangler(project.module, {"FAILING": "Example"})
    )
    engine = await open_engine(config, clock)
    try:
        await engine.env().FAILING.create(id="f")
        async with asyncio.timeout(20):
            while (await (await engine.workflow("failing").get("f")).status())[
                "status"
            ] != "complete":
                clock.advance(60_000)
                await asyncio.sleep(0.05)
        failing = (await steps(engine, "failing", "f"))[("do", "my_failing-1")]
        assert len(failing.attempts) == 6
        assert failing.error == {"name": "TypeError", "message": "Intentional error in my_failing"}
    finally:
        await engine.close()


NON_RETRYABLE_WRAPPER = """
class Example(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("refuse")
        async def refuse():
            message = event["payload"]["message"]
{statement}
        await refuse()
"""


async def test_non_retryable_fragment(project: Project) -> None:
    # The import is the page's first line; its `raise` runs inside a step, where it belongs.
    imports, statement = API_NON_RETRYABLE.split("\n\n")
    code = (
        WORKFLOW_IMPORTS
        + imports
        + "\n"
        + NON_RETRYABLE_WRAPPER.format(statement=textwrap.indent(statement.rstrip("\n"), " " * 12))
    )
    config = project.write(code, wrangler(project.module, {"REFUSER": "Example"}))
    engine = await open_engine(config)
    try:
        await engine.env().REFUSER.create(id="r", params={"message": "card declined"})
        status = await until(engine, "refuser", "r", "errored")
        assert status["error"] == {"name": "NonRetryableError", "message": "card declined"}
        refused = (await steps(engine, "refuser", "r"))[("do", "refuse-1")]
        assert len(refused.attempts) == 1
    finally:
        await engine.close()


async def test_step_config_fragment(project: Project) -> None:
    config = project.write(
        WORKFLOW_IMPORTS + API_CONFIG, wrangler(project.module, {"DEMO": "DemoWorkflowClass"})
    )
    engine = await open_engine(config)
    try:
        await engine.env().DEMO.create(id="d")
        # The page's class defines the step and never calls it: run() returns at once.
        await until(engine, "demo", "d", "complete")
        assert await steps(engine, "demo", "d") == {}
    finally:
        await engine.close()


WORKER_WORKFLOW = """

class MyWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        return event["payload"]
"""


async def test_create_via_binding_in_a_worker(project: Project, worker_client: Any) -> None:
    code = WORKER_IMPORTS + "\n\n" + API_CREATE_VIA_BINDING + WORKER_WORKFLOW
    config = project.write(code, wrangler(project.module, {"MY_WORKFLOW": "MyWorkflow"}))
    engine = await open_engine(config)
    try:
        response = await worker_client(engine).post("/")
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "success"}
        [created] = await listed(engine, "my-workflow")
        await until(engine, "my-workflow", created.id, "complete")
    finally:
        await engine.close()


@pytest.mark.parametrize("date", ["2024-10-22", "2026-08-01"])
async def test_dag(project: Project, date: str) -> None:
    # `depends=` is the legacy signature: projects dated before 2026-02-25 (the docs' own
    # wrangler.toml says 2024-10-22) get it; newer ones get workerd's implicit-dependencies
    # step.do, which has no `depends` keyword, on Cloudflare and here alike.
    config = project.write(DAG, wrangler(project.module, {"DAG": "MyWorkflow"}, date=date))
    engine = await open_engine(config)
    try:
        await engine.env().DAG.create(id="dag")
        if date < "2026-02-25":
            await until(engine, "dag", "dag", "complete")
            recorded = await steps(engine, "dag", "dag")
            assert output(recorded[("do", "my final step-1")]) == 30
            assert output(recorded[("do", "dependency a-1")]) == 10
        else:
            status = await until(engine, "dag", "dag", "errored")
            assert status["error"]["name"] == "TypeError"
            assert "depends" in status["error"]["message"]
    finally:
        await engine.close()


# --- bindings.mdx ------------------------------------------------------------------------------


def test_bindings_wrangler_toml_names_a_typescript_main(project: Project) -> None:
    # The page's wrangler.toml has `main = "src/index.ts"`, copied from a TypeScript project: a
    # Python Worker's main is a .py module, on Cloudflare (which would bundle index.ts as
    # JavaScript, with no MyWorkflow class) and here. Stepstone refuses it and says why.
    (project.folder / "src").mkdir()
    (project.folder / "src" / "index.ts").write_text("export default {}\n")
    path = project.folder / "wrangler.toml"
    path.write_text(BINDINGS_WRANGLER)
    with pytest.raises(ProjectConfigError, match=r"main: must be a Python module \(\.py\)"):
        load_project(path)
    # With main pointing at a Python file, the rest of the file is read as it is: one workflow,
    # the legacy step.do (the page's date, 2024-10-22).
    (project.folder / "src" / "entry.py").write_text(WORKFLOW_IMPORTS + BINDINGS_PAYLOAD)
    path.write_text(BINDINGS_WRANGLER.replace("src/index.ts", "src/entry.py"))
    config = load_project(path)
    assert [(w.name, w.binding, w.class_name) for w in config.workflows] == [
        ("workflows-starter", "MY_WORKFLOW", "MyWorkflow")
    ]
    assert config.implicit_dependencies is False


async def test_bindings_payload_workflow(project: Project) -> None:
    # The page imports to_js but not WorkflowEntrypoint: the wrapper adds that import.
    config = project.write(
        WORKFLOW_IMPORTS + BINDINGS_PAYLOAD, wrangler(project.module, {"DEMO": "DemoWorkflowClass"})
    )
    engine = await open_engine(config)
    try:
        await engine.env().DEMO.create(id="p", params={"foo": "bar"})
        # first_step is defined, never called: run() ends at once, as on Cloudflare.
        await until(engine, "demo", "p", "complete")
    finally:
        await engine.close()


BINDINGS_WORKFLOW = """

class MyWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        await step.wait_for_event("hold", "release")
        return event["payload"]
"""


async def test_bindings_create_in_on_fetch(project: Project, worker_client: Any) -> None:
    # `Response` is used, not imported, on the page: WORKER_IMPORTS supplies it.
    code = WORKER_IMPORTS + BINDINGS_CREATE + BINDINGS_WORKFLOW
    config = project.write(code, wrangler(project.module, {"MY_WORKFLOW": "MyWorkflow"}))
    engine = await open_engine(config)
    try:
        response = await worker_client(engine).get("/")
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "success"}
        [created] = await listed(engine, "my-workflow")
        assert created.params is not None and b'"foo"' in created.params
    finally:
        await engine.close()


async def test_bindings_create_batch(project: Project, worker_client: Any) -> None:
    # Top-level `await env...` on the page: the statements become on_fetch's body.
    code = in_fetch(BINDINGS_CREATE_BATCH) + BINDINGS_WORKFLOW
    config = project.write(code, wrangler(project.module, {"MY_WORKFLOW": "MyWorkflow"}))
    engine = await open_engine(config)
    try:
        response = await worker_client(engine).get("/")
        assert response.status_code == 200, response.text
        ids = sorted(row.id for row in await listed(engine, "my-workflow"))
        assert ids == ["id-abc123", "id-def456", "id-ghi789"]
        handle = await engine.env().MY_WORKFLOW.get("id-def456")
        await handle.send_event(type="release")
        assert (await handle.wait(10))["output"] == {"hello": "world-1"}
    finally:
        await engine.close()


async def test_bindings_get_and_instance_methods(project: Project, worker_client: Any) -> None:
    code = in_fetch(BINDINGS_GET) + BINDINGS_WORKFLOW
    config = project.write(code, wrangler(project.module, {"MY_WORKFLOW": "MyWorkflow"}))
    engine = await open_engine(config)
    try:
        await engine.env().MY_WORKFLOW.create(id="abc-123")
        await until(engine, "my-workflow", "abc-123", "waiting")
        response = await worker_client(engine).get("/")
        assert response.status_code == 200, response.text
        # status, pause, resume, restart, terminate: the last one wins.
        status = await until(engine, "my-workflow", "abc-123", "terminated")
        assert status["status"] == "terminated"
    finally:
        await engine.close()


async def test_bindings_send_event_on_the_binding(project: Project, worker_client: Any) -> None:
    # The page calls send_event on the Workflow binding; it is a method of an instance
    # (`instance.send_event`), and the binding names no instance. Cloudflare's binding has no
    # sendEvent, so the Worker fails there too; here the same AttributeError answers 500.
    code = in_fetch(BINDINGS_SEND_EVENT) + BINDINGS_WORKFLOW
    config = project.write(code, wrangler(project.module, {"MY_WORKFLOW": "MyWorkflow"}))
    engine = await open_engine(config)
    try:
        response = await worker_client(engine).get("/")
        assert response.status_code == 500
        assert not hasattr(engine.env().MY_WORKFLOW, "send_event")
    finally:
        await engine.close()


# --- workerd's Python workflow tests -----------------------------------------------------------


LEGACY = ["no_python_workflows_implicit_dependencies"]


async def test_workerd_legacy_depends_before_ctx(project: Project) -> None:
    # workerd's wd-test gives the module its flags; its JS side calls run() and expects "foobar".
    config_text = wrangler(project.module, {"PY": "PythonWorkflowDepends"}).replace(
        '"python_workflows"]', '"python_workflows", "no_python_workflows_implicit_dependencies"]'
    )
    engine = await open_engine(project.write(WORKERD_LEGACY_NO_CTX, config_text))
    try:
        await engine.env().PY.create(id="t")
        status = await until(engine, "py", "t", "complete", "errored")
        assert status == {"status": "complete", "error": None, "output": "foobar", "rollback": None}
    finally:
        await engine.close()


@pytest.mark.parametrize(
    ("code", "cls", "flag", "checking_step"),
    [
        (WORKERD_IMPLICIT, "WorkflowEntrypointExample", "", "normal_step-1"),
        (WORKERD_LEGACY, "PythonWorkflowDepends", "no_", "step_2-1"),
    ],
    ids=["workflow.py", "workflow-old.py"],
)
async def test_workerd_tests_assert_their_stubs_string_attempt(
    project: Project, code: str, cls: str, flag: str, checking_step: str
) -> None:
    # These tests run against a JS stub step whose ctx is {attempt: '1'} (a string), and assert
    # `ctx["attempt"] == "1"`. Cloudflare's engine passes ctx.attempt as the number 1 (spec 4.3),
    # as Stepstone does, so the assertion fails in a deployed Worker as here: each attempt of the
    # first step that checks it raises AssertionError, and out of retries the instance errors.
    clock = ManualClock()
    config_text = wrangler(project.module, {"PY": cls}).replace(
        '"python_workflows"]',
        f'"python_workflows", "{flag}python_workflows_implicit_dependencies"]',
    )
    engine = await open_engine(project.write(code, config_text), clock)
    try:
        await engine.env().PY.create(id="t")
        async with asyncio.timeout(20):
            while (await (await engine.workflow("py").get("t")).status())["status"] != "errored":
                clock.advance(60_000)
                await asyncio.sleep(0.05)
        recorded = await steps(engine, "py", "t")
        failed = recorded[("do", checking_step)]
        assert failed.error == {"name": "AssertionError", "message": ""}
        assert len(failed.attempts) == 6
    finally:
        await engine.close()


# --- other revisions of index.mdx and dag.mdx --------------------------------------------------


@pytest.mark.parametrize(
    ("code", "config_text", "config_name"),
    [
        (INDEX_STARTER_2026_02, INDEX_WRANGLER_TOML_2026_02, "wrangler.toml"),
        (INDEX_STARTER_LIVE, INDEX_WRANGLER, "wrangler.jsonc"),
    ],
    ids=["2026-02-on_fetch", "live-Default"],
)
async def test_index_starter_revisions(
    project: Project, worker_client: Any, code: str, config_text: str, config_name: str
) -> None:
    # The page's Worker creates an instance; the workflow runs both steps. The 2026-02 revision's
    # `on_fetch(request, env)` takes two arguments (it answered 500 before the Worker app called
    # handlers as workerd does).
    config = project.write(code, config_text, config_name)
    engine = await open_engine(config)
    try:
        response = await worker_client(engine).get("/")
        assert (response.status_code, response.text) == (200, "Hello world!")
        [created] = await listed(engine, "workflows-demo")
        await until(engine, "workflows-demo", created.id, "complete")
        recorded = await steps(engine, "workflows-demo", created.id)
        assert sorted(name for _, name in recorded) == ["step1-1", "step2-1"]
    finally:
        await engine.close()


async def test_dag_live_by_parameter_names(
    project: Project, worker_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # No compatibility date on the page: wrangler's default is today, so implicit dependencies.
    clock = ManualClock()
    config_text = wrangler(project.module, {"MY_WORKFLOW": "PythonWorkflowStarter"})
    engine = await open_engine(project.write(DAG_LIVE, config_text), clock)
    try:
        response = await worker_client(engine).get("/")
        assert (response.status_code, response.text) == (200, "Hello world!")
        [created] = await listed(engine, "my-workflow")
        await until(engine, "my-workflow", created.id, "waiting")
        clock.advance(10_000)
        await until(engine, "my-workflow", created.id, "complete")
        recorded = await steps(engine, "my-workflow", created.id)
        assert output(recorded[("do", "dep_1-1")]) == "dep1"
        assert output(recorded[("do", "dep_2-1")]) == "dep2"
        assert recorded[("do", "final_step-1")].success is True
        assert "dep1 dep2" in capsys.readouterr().out
    finally:
        await engine.close()


# Python reports the un-awaited `step.sleep` coroutine when it is collected; that report is the
# example's own, not a failure of the engine.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore:coroutine 'step.sleep' was never awaited:RuntimeWarning")
async def test_dag_2026_01_with_depends(
    project: Project, worker_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # The page's `step.sleep(...)` is never awaited. On Cloudflare the JS call starts the sleep
    # at once but run() does not wait for it; here the sleep never starts (Python warns that
    # the coroutine was never awaited). Either way the steps run without waiting 10 s.
    config_text = wrangler(project.module, {"MY_WORKFLOW": "PythonWorkflowStarter"}, "2024-03-29")
    engine = await open_engine(project.write(DAG_2026_01, config_text))
    try:
        response = await worker_client(engine).get("/")
        assert (response.status_code, response.text) == (200, "Hello world!")
        [created] = await listed(engine, "my-workflow")
        await until(engine, "my-workflow", created.id, "complete")
        recorded = await steps(engine, "my-workflow", created.id)
        assert sorted(name for _, name in recorded) == [
            "demo do-1",
            "dependency1-1",
            "dependency2-1",
        ]
        assert "something" in capsys.readouterr().out
    finally:
        await engine.close()
