"""A wrangler project under a real `stepstone serve`: a real (Pyodide-only) `workers` package
installed beside it, a workflow module that cannot import, vars, secrets, wait_until and the
scheduled handler."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import child_env, free_port, wait_until_up

WRANGLER = """
name = "shop"
main = "src/entry.py"
compatibility_flags = ["python_workers", "python_workflows"]

[[workflows]]
name = "good"
binding = "GOOD"
class_name = "Good"

[[workflows]]
name = "broken"
binding = "BROKEN"
class_name = "Broken"
script_name = "broken"

[vars]
GREETING = "hello"

[triggers]
crons = ["0 0 1 1 *"]
"""

ENTRY = """
import asyncio
import pathlib

from pyodide.ffi import to_js
from js import Object
from workers import DurableObject, Response, WorkerEntrypoint, WorkflowEntrypoint, handler


class Counter(DurableObject):
    pass


class Good(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("greet")
        async def greet():
            return f"{self.env.GREETING} {event['payload']['name']} ({self.env.API_KEY})"

        return await greet()


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        if request.url.endswith("/good"):
            options = to_js({"params": await request.json()}, dict_converter=Object.fromEntries)
            instance = await self.env.GOOD.create(options)
            return Response.json({"id": instance.id})
        if request.url.endswith("/broken"):
            try:
                await self.env.BROKEN.create()
            except Exception as exc:
                return Response(f"{type(exc).__name__}: {exc}", status=500)
        if request.url.endswith("/later"):
            async def later():
                await asyncio.sleep(0.2)
                pathlib.Path("later.txt").write_text("done")

            self.ctx.wait_until(later())
            return Response("accepted", status=202, headers={"x-kind": "later"})
        if request.url.endswith("/durable"):
            Counter(None, self.env)
        return Response.redirect("https://example.com/", 301)

    async def scheduled(self, controller, env, ctx):
        await env.GOOD.create(id="from-cron", params={"name": controller.cron})
"""


@dataclass
class Served:
    api: str
    worker: str
    folder: Path
    log: Path
    process: subprocess.Popen[bytes]

    def status(self, workflow: str, instance_id: str) -> dict[str, object]:
        url = f"{self.api}/client/v4/accounts/default/workflows/{workflow}/instances/{instance_id}"
        deadline = time.monotonic() + 20
        while True:
            detail = httpx.get(url).json()["result"] or {}
            if detail.get("status") in {"complete", "errored"}:
                return dict(detail)
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("project")
    folder = root / "shop"
    (folder / "src").mkdir(parents=True)
    (folder / "wrangler.toml").write_text(WRANGLER)
    (folder / ".dev.vars").write_text("API_KEY=s3cret\n")
    (folder / "src" / "entry.py").write_text(ENTRY)
    (folder / "src" / "broken.py").write_text("import does_not_exist\n")
    # What Cloudflare's workers-runtime-sdk looks like outside Pyodide: it imports js.
    real = root / "site" / "workers"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("import js\nfrom js import Object\n")
    (real / "workflows.py").write_text("class NonRetryableError(Exception):\n    pass\n")
    api_port, worker_port = free_port(), free_port()
    log = root / "serve.log"
    env = child_env(PYTHONPATH=f"{child_env()['PYTHONPATH']}:{root / 'site'}")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stepstone",
                "serve",
                "--insecure-no-auth",
                "--db",
                f"sqlite:///{root / 'db.sqlite'}",
                "--port",
                str(api_port),
                "--worker-port",
                str(worker_port),
                "--test-scheduled",
            ],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    api = f"http://127.0.0.1:{api_port}"
    try:
        wait_until_up(api, process, log)
        yield Served(api, f"http://127.0.0.1:{worker_port}", folder, log, process)
    finally:
        process.terminate()
        process.wait(30)


def test_the_shim_wins_over_a_real_workers_package_with_one_warning(served: Served) -> None:
    created = httpx.post(f"{served.worker}/good", json={"name": "ada"})
    assert created.status_code == 200, served.log.read_text()
    detail = served.status("good", created.json()["id"])
    assert detail["status"] == "complete"
    assert detail["output"] == "hello ada (s3cret)"
    warnings = [line for line in served.log.read_text().splitlines() if "'workers' package" in line]
    assert len(warnings) == 1, warnings
    assert "No module named 'js'" not in served.log.read_text()


def test_a_module_that_cannot_import_does_not_stop_the_others(served: Served) -> None:
    answer = httpx.post(f"{served.worker}/broken")
    assert answer.status_code == 500
    assert answer.text.startswith("InvalidWorkflowDefinition: workflow 'broken' cannot run")
    assert "does_not_exist" in answer.text
    listed = httpx.get(f"{served.api}/client/v4/accounts/default/workflows").json()["result"]
    assert {w["name"] for w in listed} == {"good", "broken"}
    # The REST API refuses too, rather than queueing an instance no worker here can run.
    instances = f"{served.api}/client/v4/accounts/default/workflows/broken/instances"
    refused = httpx.post(instances, json={"id": "never"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["errors"][0]["code"] == 10202
    assert "does_not_exist" in refused.json()["messages"][0]["message"]
    assert httpx.get(f"{instances}/never").status_code == 404


def test_responses_headers_redirects_and_wait_until(served: Served) -> None:
    later = httpx.get(f"{served.worker}/later")
    assert (later.status_code, later.text, later.headers["x-kind"]) == (202, "accepted", "later")
    deadline = time.monotonic() + 10
    while not (served.folder / "later.txt").exists():
        assert time.monotonic() < deadline, "ctx.wait_until work never ran"
        time.sleep(0.05)
    moved = httpx.get(f"{served.worker}/elsewhere")
    assert (moved.status_code, moved.headers["location"]) == (301, "https://example.com/")
    durable = httpx.get(f"{served.worker}/durable")
    assert durable.status_code == 500
    assert "Durable Object" in served.log.read_text()


def test_the_scheduled_handler_runs_on_request(served: Served) -> None:
    ran = httpx.get(f"{served.worker}/__scheduled", params={"cron": "0 0 1 1 *"})
    assert ran.status_code == 200
    assert served.status("good", "from-cron")["output"] == "hello 0 0 1 1 * (s3cret)"
