"""A bounded schemathesis run (``--checks all``, a fixed seed) against a live server: no server
error and no check failure, so /client/v4/openapi.json says what the server does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stepstone.web.common.throttle import Policy, for_ops
from tests.api.conftest import ACCOUNT, LiveServer

schemathesis = pytest.importorskip("schemathesis")

SEED = 11
MAX_EXAMPLES = 15
WORKFLOWS = "/client/v4/accounts/{account_id}/workflows/{workflow_name}"
# Checks that do not apply to one operation, each with why. Nothing else is excluded.
CONFIG = f"""
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "429"]

# A workflow's body must name an importable module and a class in it: no schema can say
# which strings those are, so a schema-valid body is refused with 400 (10202).
[[operations]]
include-name = "PUT {WORKFLOWS}"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "400", "401", "403", "404", "409", "429"
]

# Cross-field rules: rollback goes only with terminate, from only with restart, and from must
# name a step of the instance's history (Cloudflare answers 400, 10407, when it does not).
[[operations]]
include-name = "PATCH {WORKFLOWS}/instances/{{instance_id}}/status"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "400", "401", "403", "404", "409", "429"
]

# A cursor is opaque: only one the server handed out is valid, any other is a 400.
[[operations]]
include-name = "GET {WORKFLOWS}/instances"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "429"]
"""


def test_schemathesis_finds_nothing(sqlite_server: LiveServer, tmp_path: Path) -> None:
    # One backend: the run takes about three minutes on each, and what it checks (answers
    # against the OpenAPI) is the API's; the other suites here run on PostgreSQL too.
    server = sqlite_server

    async def configure() -> None:
        # The run sends wrong and missing credentials on purpose (ignored_auth), thousands of
        # times from one address; the throttle would rightly lock it out.
        for_ops(server.engine.ops).policy = Policy(free_failures=10**9, lock_after=10**9)

    server.run(configure())
    server.register("echo", "Echo")
    with server.http() as http:
        http.post(f"/accounts/{ACCOUNT}/workflows/echo/instances", json={"instance_id": "e1"})
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{server.base}/client/v4/openapi.json",
        "--header",
        f"Authorization: Bearer {server.token}",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        # One worker: schemathesis' own code generation is not thread-safe on CPython 3.11.
        "--workers",
        "1",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    (tmp_path / "run.txt").write_text(done.stdout)
