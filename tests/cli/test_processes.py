"""Process commands: tokens against the database, an authenticated server with a separate
worker, ``migrate``, ``version``, config errors, and ``dev`` reloading changed code."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.cli.conftest import (
    Server,
    child_env,
    free_port,
    start_server,
    stepstone,
    wait_until_up,
)


def test_version_and_help(tmp_path: Path) -> None:
    result = stepstone("version", cwd=tmp_path, env=child_env())
    assert result.code == 0 and result.out.startswith("stepstone ")
    assert stepstone("--help", cwd=tmp_path, env=child_env()).code == 0


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'sub' / 'new.db'}"
    result = stepstone("migrate", "--db", db, cwd=tmp_path, env=child_env())
    assert result.code == 0 and "up to date" in result.out
    assert (tmp_path / "sub" / "new.db").exists()
    bad = stepstone("migrate", cwd=tmp_path, env=child_env(STEPSTONE_DATABASE_URL="nope"))
    assert bad.code == 2 and "not a database URL" in bad.err


def test_tokens_and_an_authenticated_server_with_its_own_worker(
    tmp_path: Path, cli_db_url: str | None
) -> None:
    folder = tmp_path / "auth"
    server = start_server(folder, "--no-worker", "--data-dir", str(folder / "state"), db=cli_db_url)
    db = ["--db", server.db]
    worker = subprocess.Popen(
        [sys.executable, "-m", "stepstone", "worker", "--config", "stepstone.toml", *db],
        cwd=folder,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        created = server.run(
            "tokens", "create", "--name", "ci", "--permission", "write", *db, "--json"
        ).json()
        assert created["permissions"] == ["Workers Scripts Write"]
        secret = created["token"]
        reader = server.run(
            "tokens", "create", "--name", "ro", "--permission", "read", "--account", "other", *db
        )
        assert "store it now" in reader.out
        listed = server.run("tokens", "list", *db, "--json").json()
        assert {t["name"] for t in listed} >= {"admin", "ci", "ro"}
        assert all("token" not in t for t in listed)

        refused = server.run("workflows", "list", check=False)
        assert refused.code == 1 and "pass --token" in refused.err
        server.run("workflows", "trigger", "greeter", "--id", "w-1", token=secret)
        assert server.run("instances", "list", "greeter", "--json", token=secret).json()
        deadline = time.monotonic() + 20
        while True:
            detail = server.run("instances", "describe", "greeter", "w-1", "--json", token=secret)
            if detail.json()["status"] == "complete":
                break
            assert time.monotonic() < deadline, "the separate worker never ran the instance"
            time.sleep(0.2)

        server.run("tokens", "revoke", created["id"], *db)
        again = server.run("workflows", "list", token=secret, check=False)
        assert again.code == 1
        twice = server.run("tokens", "revoke", created["id"], *db, check=False)
        assert twice.code == 1 and "no active token" in twice.err
        unknown = server.run(
            "tokens", "create", "--name", "x", "--permission", "all", *db, check=False
        )
        assert unknown.code == 2
    finally:
        worker.terminate()
        worker.wait(15)
        server.stop()


def test_no_access_log_serves_without_a_line_per_request(tmp_path: Path) -> None:
    logs = {}
    for name, args in (("default", ()), ("quiet", ("--no-access-log",))):
        server = start_server(tmp_path / name, "--insecure-no-auth", *args)
        try:
            listed = httpx.get(f"{server.url}/client/v4/accounts/default/workflows")
            assert listed.status_code == 200
        finally:
            server.stop()
        logs[name] = (tmp_path / name / "server.log").read_text()
    assert '"GET /client/v4/accounts/default/workflows HTTP/1.1" 200' in logs["default"]
    assert "GET /client/v4" not in logs["quiet"]
    assert "Uvicorn running" in logs["quiet"]


def test_serve_rejects_an_invalid_schedule_clearly(tmp_path: Path) -> None:
    (tmp_path / "stepstone.toml").write_text(
        '[[workflows]]\nname = "x"\nclass_name = "Greeter"\nscript_name = "tests.cli.flows"\n'
        'schedules = ["61 * * * *"]\n'
    )
    result = stepstone(
        "serve", "--db", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path, env=child_env()
    )
    assert result.code == 2
    assert (
        "workflow 'x'" in result.err and "'61 * * * *' is not a valid cron expression" in result.err
    )
    missing = stepstone("serve", "--config", "nope.toml", cwd=tmp_path, env=child_env())
    assert missing.code == 2 and "no such file" in missing.err


DEV_MODULE = """
from stepstone import WorkflowEntrypoint


class Versioned(WorkflowEntrypoint):
    async def run(self, event, step):
        return "{version}"
"""


def dev_output(server: Server, instance_id: str) -> str:
    server.run("workflows", "trigger", "versioned", "--id", instance_id)
    detail = server.wait_status("versioned", instance_id, "complete")
    return str(detail["output"])


def test_dev_restarts_on_code_changes(tmp_path: Path) -> None:
    (tmp_path / "devflow.py").write_text(DEV_MODULE.format(version="v1"))
    (tmp_path / "stepstone.toml").write_text(
        '[[workflows]]\nname = "versioned"\nclass_name = "Versioned"\nscript_name = "devflow"\n'
    )
    port = free_port()
    log = tmp_path / "dev.log"
    db = f"sqlite:///{tmp_path / 'dev.db'}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stepstone",
                "dev",
                "--port",
                str(port),
                "--db",
                db,
                "-i",
                "0.1",
            ],
            cwd=tmp_path,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    server = Server(url, db, tmp_path, process)
    try:
        wait_until_up(url, process, log)
        assert dev_output(server, "one") == "v1"
        (tmp_path / "devflow.py").write_text(DEV_MODULE.format(version="v2"))
        deadline = time.monotonic() + 30
        n = 0
        while True:
            n += 1
            try:
                if dev_output(server, f"try-{n}") == "v2":
                    break
            except (AssertionError, httpx.TransportError):
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        assert "restarting" in log.read_text()
    finally:
        server.stop()
    assert process.returncode == 0


SLOW_MODULE = """
import asyncio
import pathlib

from stepstone import WorkflowEntrypoint


class Slow(WorkflowEntrypoint):
    async def run(self, event, step):
        async def work():
            pathlib.Path("step-started").touch()
            await asyncio.sleep(2)
            return "finished"

        return await step.do("work", work)
"""


def test_serve_drains_running_steps_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "slowflow.py").write_text(SLOW_MODULE)
    (tmp_path / "stepstone.toml").write_text(
        '[[workflows]]\nname = "slow"\nclass_name = "Slow"\nscript_name = "slowflow"\n'
    )
    server = start_server(tmp_path, "--insecure-no-auth")
    try:
        server.run("workflows", "trigger", "slow", "--id", "s-1")
        deadline = time.monotonic() + 20
        while not (tmp_path / "step-started").exists():
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0, (tmp_path / "server.log").read_text()
    finally:
        server.stop()
    with sqlite3.connect(tmp_path / "stepstone.db") as db:
        events = db.execute(
            "SELECT type FROM instance_events WHERE step_name = 'work-1' ORDER BY event_id"
        ).fetchall()
    kinds = [kind for (kind,) in events]
    assert "step_completed" in kinds and "attempt_errored" not in kinds, kinds
    assert "WorkflowInternalError" not in (tmp_path / "server.log").read_text()
