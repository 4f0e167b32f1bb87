"""PostgreSQL goes away under a running server (``stop -m immediate``) and comes back (issue 11).

A cluster of its own on a free port (never the shared one): while it is down every request
answers 503 with its envelope code and ``Retry-After`` within 5 s, ``/healthz`` stays 200 and
``/readyz`` says 503; the outage is logged once, without a traceback; once it is back the
worker finishes a sleeping instance within 2 s (plus slack) and the API answers again.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudflare
import httpx
import pytest

from stepstone import WorkflowEntrypoint
from tests.api.conftest import ACCOUNT, LiveServer, start_server

pytestmark = pytest.mark.skipif(
    shutil.which("pg_createcluster") is None or shutil.which("pg_ctlcluster") is None,
    reason="needs postgresql-common's pg_createcluster to make a cluster it may stop",
)
VERSION = "15"
UNAVAILABLE = {"code": 10007, "message": "workflows.api.error.storage_unavailable"}


class Napper(WorkflowEntrypoint):
    """Sleeps past the start of the outage, so the worker must wake it after."""

    async def run(self, event: Any, step: Any) -> Any:
        await step.sleep("nap", "1 second")
        return await step.do("after", lambda: "rested")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ctl(name: str, *args: str) -> None:
    subprocess.run(["pg_ctlcluster", VERSION, name, *args], check=True, capture_output=True)


@pytest.fixture
def cluster() -> Iterator[tuple[str, Callable[..., None]]]:
    port = _free_port()
    name = f"stepstone_outage_{port}"
    subprocess.run(
        [
            *("pg_createcluster", VERSION, name, "-p", str(port), "--start"),
            *("-o", "fsync=off", "-o", "shared_buffers=16MB", "--", "--auth=trust"),
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", lambda *a: _ctl(name, *a)
    finally:
        subprocess.run(
            ["pg_dropcluster", VERSION, name, "--stop"], check=False, capture_output=True
        )


def _timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    answer = call()
    return answer, time.monotonic() - began


def _warnings(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """What an operator sees at the default level, from any logger (asyncpg's pool too)."""
    return [r for r in records if r.levelno >= logging.WARNING]


def test_requests_answer_503_during_an_outage_and_workers_resume_after(
    cluster: tuple[str, Callable[..., None]], caplog: pytest.LogCaptureFixture
) -> None:
    url, ctl = cluster
    live, stop_server = start_server(url)
    try:
        _run_outage(live, ctl, caplog)
    finally:
        stop_server()


def _run_outage(
    live: LiveServer, ctl: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    with live.http() as client:
        answer = client.put(
            f"/accounts/{ACCOUNT}/workflows/napper",
            json={"class_name": "Napper", "script_name": __name__},
        )
        assert answer.status_code == 200, answer.text
        created = client.post(
            f"/accounts/{ACCOUNT}/workflows/napper/instances", json={"instance_id": "n1"}
        )
        assert created.status_code == 200, created.text
    live.wait_step("napper", "n1", "nap-1")
    base = live.base
    instances = f"{live.account_url()}/workflows/napper/instances"
    headers = {"authorization": f"Bearer {live.token}"}

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="stepstone"):
        ctl("stop", "-m", "immediate")
        with httpx.Client(headers=headers, timeout=30) as client:
            calls: list[Callable[[], httpx.Response]] = [
                lambda: client.get(f"{instances}/n1"),
                lambda: client.get(instances),
                lambda: client.post(instances, json={"instance_id": "during"}),
                lambda: client.get(f"{instances}/n1/step", params={"name": "x", "type": "step"}),
            ]
            # Concurrent, as clients would be; each on its own clock.
            with ThreadPoolExecutor(len(calls)) as pool:
                answers = list(pool.map(_timed, calls))
            for answer, took in answers:
                assert answer.status_code == 503, answer.text
                assert took < 5.0, f"answered after {took:.1f}s"
                body = answer.json()
                assert body["success"] is False and body["errors"] == [UNAVAILABLE]
                assert int(answer.headers["retry-after"]) > 0
            assert client.get(f"{base}/healthz").status_code == 200
            ready, took = _timed(lambda: client.get(f"{base}/readyz"))
            assert ready.status_code == 503 and took < 5.0
            assert ready.json()["errors"] == [UNAVAILABLE]
        sdk = live.sdk()
        began = time.monotonic()
        with pytest.raises(cloudflare.APIStatusError) as raised:
            sdk.workflows.instances.get("n1", account_id=ACCOUNT, workflow_name="napper")
        assert raised.value.status_code == 503 and time.monotonic() - began < 5.0

        # Well past the instance's wake-up: the worker has been retrying all along.
        time.sleep(2.0)
        ctl("start")
        back = time.monotonic()
        done = live.wait_done("napper", "n1")
        resumed = time.monotonic() - back
        warnings = _warnings(caplog.records)

    assert done["status"] == "complete" and done["output"] == "rested"
    # Issue 11: within 2 s of the database coming back; slack for a shared 2-core machine.
    assert resumed < 4.0, f"resumed {resumed:.1f}s after the database came back"
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "unreachable" in warnings[0].getMessage()
    assert not any(r.exc_info for r in warnings)
    with live.http() as client:
        assert client.get(f"{base}/readyz").status_code == 200
        again = client.post(
            f"/accounts/{ACCOUNT}/workflows/napper/instances", json={"instance_id": "n2"}
        )
        assert again.status_code == 200, again.text
    assert live.wait_done("napper", "n2")["status"] == "complete"
