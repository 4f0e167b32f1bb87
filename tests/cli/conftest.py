"""A real ``stepstone serve`` in a subprocess, and a runner for CLI commands as subprocesses.

``server`` (a module's shared server) and ``cli_db_url`` run their tests on SQLite and on
PostgreSQL (``CLI_BACKENDS``): those tests are about what the store holds as the CLI, the
server and its workers see it. Tests of usage, flags and the first-run experience start their
own SQLite server (the default a newcomer gets).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PgDatabases, pg_database_url

REPO = Path(__file__).resolve().parents[2]
CLI_BACKENDS = ["sqlite", "postgres"]
PROJECT = """
[[workflows]]
name = "greeter"
class_name = "Greeter"
script_name = "tests.cli.flows"
schedules = ["0 3 1 1 *"]

[[workflows]]
name = "approval"
class_name = "Approval"
script_name = "tests.cli.flows"

[[workflows]]
name = "streamer"
class_name = "Streamer"
script_name = "tests.cli.flows"

[[workflows]]
name = "failing"
class_name = "Failing"
script_name = "tests.cli.flows"

[[workflows]]
name = "sleeper"
class_name = "Sleeper"
script_name = "tests.cli.flows"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPSTONE_")}
    env["PYTHONPATH"] = str(REPO)
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Server:
    url: str
    db: str
    folder: Path
    process: subprocess.Popen[bytes]

    def run(self, *args: str, token: str | None = None, check: bool = True) -> Result:
        extra = {"STEPSTONE_URL": self.url}
        if token:
            extra["STEPSTONE_API_TOKEN"] = token
        result = stepstone(*args, cwd=self.folder, env=child_env(**extra))
        if check and result.code != 0:
            raise AssertionError(f"stepstone {' '.join(args)} -> {result.code}\n{result.err}")
        return result

    def wait_status(self, workflow: str, instance_id: str, *statuses: str) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # Polling through the API directly: a CLI process per look would be slow.
            response = httpx.get(
                f"{self.url}/client/v4/accounts/default/workflows/{workflow}/instances/{instance_id}"
            )
            detail: dict[str, Any] = response.json()["result"] or {}
            if detail.get("status") in statuses:
                return detail
            time.sleep(0.1)
        raise AssertionError(f"{instance_id} never reached {statuses}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def stepstone(*args: str, cwd: Path, env: dict[str, str], timeout: float = 60) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "stepstone", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode}:\n{log.read_text()}")
        try:
            httpx.get(url + "/client/v4/accounts/default/workflows", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"server did not start:\n{log.read_text()}")


def start_server(folder: Path, *args: str, command: str = "serve", db: str | None = None) -> Server:
    """A server on ``db``, by default a SQLite file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "stepstone.toml"
    if not config.exists():
        config.write_text(PROJECT)
    port = free_port()
    db = db or f"sqlite:///{folder / 'stepstone.db'}"
    log = folder / "server.log"
    command_line = [sys.executable, "-m", "stepstone", command, "--config", str(config)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command_line, "--db", db, "--port", str(port), *args],
            cwd=folder,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    server = Server(url, db, folder, process)
    try:
        wait_until_up(url, process, log)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(params=CLI_BACKENDS)
def cli_db_url(request: pytest.FixtureRequest) -> str | None:
    """A fresh store for one test's server: None is the server folder's own SQLite file."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture(scope="module", params=CLI_BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("server")
    if request.param == "sqlite":
        srv = start_server(folder, "--insecure-no-auth")
        try:
            yield srv
        finally:
            srv.stop()
        return
    # A database for the module: ``pg_database`` is per test, its pool is per session.
    databases: PgDatabases = request.getfixturevalue("pg_databases")
    name = databases.take()
    try:
        srv = start_server(folder, "--insecure-no-auth", db=pg_database_url(name))
        try:
            yield srv
        finally:
            srv.stop()
    finally:
        databases.give_back(name)


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A module's server on SQLite only, for tests of usage and flags (no store involved)."""
    srv = start_server(tmp_path_factory.mktemp("server"), "--insecure-no-auth")
    try:
        yield srv
    finally:
        srv.stop()
