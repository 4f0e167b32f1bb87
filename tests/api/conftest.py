"""A real uvicorn server on a free loopback port, in a background thread, per test.

``server`` runs each test on SQLite and on PostgreSQL (``SERVER_BACKENDS``): the API reads and
writes through the store, so each test checks both backends. The in-memory store is left out
here (it is proven by the storage and engine suites, and costs a server start per test);
``sqlite_server`` is for tests that reach into the SQLite file itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import cloudflare
import httpx
import pytest
import uvicorn

from stepstone.auth import PERMISSIONS, create_token
from stepstone.embedded import Engine
from stepstone.engine.worker import WorkerSettings
from stepstone.model.statuses import ALL_STATUSES, TERMINAL
from stepstone.project import ProjectConfig
from stepstone.server import build_app
from stepstone.web.common.auth import AuthSettings

T = TypeVar("T")
ACCOUNT = "acc-test"
ADMIN_SECRET = "admin-secret-for-tests"
FLOWS = "tests.api.flows"
SERVER_BACKENDS = ["sqlite", "postgres"]


@dataclass
class LiveServer:
    base: str
    db_url: str
    token: str
    engine: Engine
    loop: asyncio.AbstractEventLoop
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def v4(self) -> str:
        return f"{self.base}/client/v4"

    def account_url(self, rest: str = "") -> str:
        return f"{self.v4}/accounts/{ACCOUNT}{rest}"

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the server's loop (where the engine lives)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sdk(self, *, strict: bool = True, **kwargs: Any) -> cloudflare.Cloudflare:
        options: dict[str, Any] = {"api_token": self.token, **kwargs}
        return cloudflare.Cloudflare(
            base_url=self.v4, max_retries=0, _strict_response_validation=strict, **options
        )

    def http(self, token: str | None = "default") -> httpx.Client:
        headers = {}
        if token is not None:
            headers["authorization"] = f"Bearer {self.token if token == 'default' else token}"
        return httpx.Client(base_url=self.v4, headers=headers, timeout=30)

    def register(self, name: str, class_name: str) -> None:
        with self.http() as client:
            answer = client.put(
                f"/accounts/{ACCOUNT}/workflows/{name}",
                json={"class_name": class_name, "script_name": FLOWS},
            )
            assert answer.status_code == 200, answer.text

    def wait_status(
        self, workflow: str, instance_id: str, wanted: set[str], timeout: float = 15
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.http() as client:
            while True:
                body = client.get(
                    f"/accounts/{ACCOUNT}/workflows/{workflow}/instances/{instance_id}"
                ).json()
                if body["result"]["status"] in wanted:
                    return dict(body["result"])
                if time.monotonic() > deadline:
                    raise AssertionError(f"{instance_id} stayed {body['result']['status']}")
                time.sleep(0.02)

    def wait_step(self, workflow: str, instance_id: str, step: str) -> None:
        deadline = time.monotonic() + 15
        while True:
            steps = self.wait_status(workflow, instance_id, set(ALL_STATUSES))["steps"]
            if any(s.get("name") == step for s in steps):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{instance_id} never reached step {step}")
            time.sleep(0.02)

    def wait_done(self, workflow: str, instance_id: str) -> dict[str, Any]:
        return self.wait_status(workflow, instance_id, set(TERMINAL))


def start_server(
    db_url: str, *, insecure_no_auth: bool = False, run_worker: bool = True
) -> tuple[LiveServer, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        engine = await Engine.open(
            db_url,
            config=ProjectConfig(account_id=ACCOUNT),
            run_worker=run_worker,
            worker_settings=WorkerSettings(poll_ms=50),
        )
        try:
            _, secret = await create_token(
                engine.storage, name="test-admin", permissions=list(PERMISSIONS), accounts=None
            )
            app = build_app(
                engine,
                auth=AuthSettings(admin_token=ADMIN_SECRET),
                insecure_no_auth=insecure_no_auth,
            )
            server = uvicorn.Server(
                uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
            )
            holder.update(
                engine=engine, secret=secret, server=server, loop=asyncio.get_running_loop()
            )
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            ready.set()
            await task
        finally:
            ready.set()
            await engine.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    ready.wait(30)
    if "server" not in holder:
        raise RuntimeError("the test server did not start")
    live = LiveServer(
        base=f"http://127.0.0.1:{port}",
        db_url=db_url,
        token=holder["secret"],
        engine=holder["engine"],
        loop=holder["loop"],
    )

    def stop() -> None:
        holder["server"].should_exit = True
        thread.join(30)
        sock.close()

    return live, stop


def execute_sql(db_url: str, sql: str) -> None:
    """Run ``sql`` on the server's database behind its back (as an outside writer would)."""
    if db_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(db_url.removeprefix("sqlite:///"))) as db:
            db.execute(sql)
            db.commit()
        return

    async def main() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    # Not on the test's thread: a sync test may run where pytest-asyncio owns a loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, main()).result()


def server_url(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str:
    """A fresh store of ``kind`` ("sqlite" or "postgres") for one test's server."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'api.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture(params=SERVER_BACKENDS)
def server_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return server_url(request, tmp_path, request.param)


@pytest.fixture
def server(server_db_url: str) -> Iterator[LiveServer]:
    live, stop = start_server(server_db_url)
    try:
        yield live
    finally:
        stop()


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The server on SQLite only, for a test about the SQLite file itself."""
    live, stop = start_server(f"sqlite:///{tmp_path / 'api.db'}")
    try:
        yield live
    finally:
        stop()
