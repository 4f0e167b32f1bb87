"""examples/cloudflare served as it is: `stepstone serve` in the project folder, no --config.

The Worker's fetch creates an instance through ``self.env.MY_WORKFLOW``, sends it an event, and
the official ``cloudflare`` SDK sees it complete through the REST API.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudflare
import httpx

from tests.cli.conftest import REPO, child_env, free_port, wait_until_up

EXAMPLE = REPO / "examples" / "cloudflare"
TOKEN = "example-admin-token"


def test_the_cloudflare_example_runs_unchanged(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "data"))
    api_port, worker_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stepstone",
                "serve",
                "--db",
                f"sqlite:///{tmp_path / 'stepstone.db'}",
                "--port",
                str(api_port),
                "--worker-port",
                str(worker_port),
            ],
            cwd=project,
            env=child_env(STEPSTONE_ADMIN_TOKEN=TOKEN),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    api = f"http://127.0.0.1:{api_port}"
    worker = f"http://127.0.0.1:{worker_port}"
    try:
        wait_until_up(api, process, log)
        order = {
            "items": [{"sku": "A1", "qty": 2, "price": 10}, {"sku": "B2", "qty": 1, "price": 5}]
        }
        created = httpx.post(f"{worker}/orders?id=order-1", json=order, timeout=10)
        assert created.status_code == 200, created.text
        assert created.headers["content-type"] == "application/json"
        assert created.json()["id"] == "order-1"
        assert created.json()["details"]["status"] in {"queued", "running", "waiting"}

        sdk = cloudflare.Cloudflare(api_token=TOKEN, base_url=f"{api}/client/v4", max_retries=0)
        deadline = time.monotonic() + 20
        while (
            sdk.workflows.instances.get(
                "order-1", account_id="default", workflow_name="order-workflow"
            ).status
            != "waiting"
        ):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        approved = httpx.post(f"{worker}/orders/approve?id=order-1&by=ada", timeout=10)
        assert approved.json() == {"id": "order-1", "sent": True}

        while True:
            detail = sdk.workflows.instances.get(
                "order-1", account_id="default", workflow_name="order-workflow"
            )
            if detail.status == "complete":
                break
            assert detail.status in {"queued", "running", "waiting"}, detail
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        # The SDK types the output as a string: the JSON text of the workflow's return value.
        assert json.loads(str(detail.output)) == {
            "total": 25,
            "message": "Thanks for your order: 2 items, 25 total",
            "by": "ada",
        }
        status = httpx.get(f"{worker}/orders?id=order-1", timeout=10).json()
        assert status["details"]["status"] == "complete"
        assert status["details"]["output"]["total"] == 25
        assert httpx.get(f"{worker}/nothing", timeout=10).status_code == 404
        # The REST API is where it always is, and has the workflow the wrangler config names.
        listed = sdk.workflows.list(account_id="default")
        assert [w.name for w in listed] == ["order-workflow"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
