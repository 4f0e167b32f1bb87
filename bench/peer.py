"""The peers' side: each peer in its own environment, outside the repo, built on first use.

No peer is ever a Stepstone dependency. Each lives under ``~/.cache/stepstone-bench/`` (or
``$STEPSTONE_BENCH_CACHE``), installed from the registries by its ordinary client and left
alone when already there at the pinned version:

- ``venv-dbos``: DBOS Transact 3.4.0 (PyPI), run through ``bench/dbos_bench.py``;
- ``venv-restate``: restate-sdk 1.2.0 and hypercorn 0.18.0 (PyPI), run through
  ``bench/restate_peer.py``;
- ``restate-1.7.12``: ``@restatedev/restate-server`` 1.7.12 from the npm registry (its
  platform package carries the server binary; install scripts are skipped, the only one is
  telemetry);
- ``venv-absurd``: absurd-sdk and absurdctl 0.5.1 (PyPI), run through ``bench/absurd_peer.py``.

The peer harnesses are run with ``python -m bench.<harness>`` from the repository root, so
they import ``bench.peer_common`` (standard library only) and nothing of Stepstone.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
CACHE = Path(os.environ.get("STEPSTONE_BENCH_CACHE") or Path.home() / ".cache" / "stepstone-bench")
DBOS_VERSION = "3.4.0"
RESTATE_SERVER_VERSION = "1.7.12"
RESTATE_SDK_VERSION = "1.2.0"
HYPERCORN_VERSION = "0.18.0"
ABSURD_VERSION = "0.5.1"
DBOS_VENV = CACHE / "venv-dbos"
HARNESS = "dbos_bench.py"
FLOOR = "sqlite_floor.py"

# How each DBOS SQLite configuration is obtained. DBOS 3.4.0 sets no journal_mode or
# synchronous pragma, so "default" is SQLite's own: rollback journal DELETE, synchronous FULL.
# The others set pragmas through bench/dbos_pragmas.py (a SQLAlchemy connect listener).
DBOS_SQLITE_CONFIGS = {
    "default": ("", ""),
    "wal_full": ("WAL", "FULL"),
    "wal_normal": ("WAL", "NORMAL"),
}

Log = Callable[[str], None]


def find_peer_dir(explicit: str | None = None) -> Path:
    """The folder of ``dbos_bench.py`` and ``sqlite_floor.py``: ``bench/`` unless told."""
    candidates = [explicit, os.environ.get("STEPSTONE_BENCH_PEER_DIR"), str(BENCH)]
    for candidate in candidates:
        if candidate and (Path(candidate) / HARNESS).is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        f"cannot find {HARNESS}; pass --peer-dir or set STEPSTONE_BENCH_PEER_DIR "
        f"(looked in {[str(c) for c in candidates if c]})"
    )


@dataclass
class PeerEnv:
    """A venv of pinned packages (distribution name -> version; None takes any version)."""

    venv: Path
    pins: dict[str, str | None] = field(default_factory=lambda: {"dbos": DBOS_VERSION})
    # What pip is asked for when a pin is missing, if not "name==version".
    requirements: dict[str, str] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def versions(self, packages: Sequence[str]) -> dict[str, str | None]:
        if not self.python.exists():
            return dict.fromkeys(packages)
        code = (
            "import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for name in sys.argv[1:]:\n"
            "    try: out[name] = m.version(name)\n"
            "    except m.PackageNotFoundError: out[name] = None\n"
            "print(json.dumps(out))\n"
        )
        done = subprocess.run(
            [str(self.python), "-c", code, *packages], capture_output=True, text=True, check=False
        )
        try:
            found: dict[str, str | None] = json.loads(done.stdout)
        except json.JSONDecodeError:
            return dict.fromkeys(packages)
        return found

    def installed(self, package: str) -> str | None:
        return self.versions([package]).get(package)

    def ensure(self, extra: Sequence[str] = (), log: Log = print) -> None:
        """Create the venv and install what is missing or at another version."""
        if not self.python.exists():
            log(f"creating {self.venv} (a peer's venv, not a Stepstone dependency)")
            self.venv.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
        wanted = {**self.pins, **dict.fromkeys(p for p in extra if p not in self.pins)}
        have = self.versions(list(wanted))
        missing = [
            self.requirements.get(name, f"{name}=={pin}" if pin else name)
            for name, pin in wanted.items()
            if have.get(name) is None or (pin is not None and have.get(name) != pin)
        ]
        if missing:
            log(f"installing {' '.join(missing)} into {self.venv}")
            subprocess.run(
                [str(self.python), "-m", "pip", "install", "-q", *missing],
                check=True,
            )


def dbos_env(venv: Path | None = None) -> PeerEnv:
    return PeerEnv(venv or DBOS_VENV, {"dbos": DBOS_VERSION})


def restate_env() -> PeerEnv:
    pins: dict[str, str | None] = {
        "restate-sdk": RESTATE_SDK_VERSION,
        "hypercorn": HYPERCORN_VERSION,
    }
    return PeerEnv(CACHE / "venv-restate", pins)


def absurd_env() -> PeerEnv:
    pins: dict[str, str | None] = {
        "absurd-sdk": ABSURD_VERSION,
        "absurdctl": ABSURD_VERSION,
        "psycopg": None,
    }
    return PeerEnv(CACHE / "venv-absurd", pins, {"psycopg": "psycopg[binary]"})


@dataclass
class RestateServer:
    """``@restatedev/restate-server`` from the npm registry, in its own npm prefix."""

    version: str = RESTATE_SERVER_VERSION
    prefix: Path = CACHE / f"restate-{RESTATE_SERVER_VERSION}"

    def binary(self) -> Path | None:
        # The server ships in a per-platform package (restate-server-linux-x64, ...).
        pattern = "node_modules/@restatedev/restate-server-*/bin/restate-server"
        found = sorted(glob.glob(str(self.prefix / pattern)))
        return Path(found[0]) if found else None

    def installed(self) -> str | None:
        binary = self.binary()
        if binary is None:
            return None
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, check=False
        )
        return done.stdout.strip().rpartition(" ")[2] or None

    def ensure(self, log: Log = print) -> Path:
        if self.installed() != self.version:
            log(f"installing @restatedev/restate-server@{self.version} into {self.prefix} (npm)")
            self.prefix.mkdir(parents=True, exist_ok=True)
            package = f"@restatedev/restate-server@{self.version}"
            npm = ["npm", "install", "--prefix", str(self.prefix), "--no-audit", "--no-fund"]
            npm += ["--ignore-scripts", "--save-exact", package]
            subprocess.run(npm, check=True, stdout=subprocess.DEVNULL)
        binary = self.binary()
        if binary is None or self.installed() != self.version:
            raise RuntimeError(f"restate-server {self.version} is not under {self.prefix}")
        return binary


def json_lines(text: str) -> list[dict[str, Any]]:
    rows = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def run_json(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 1800,
) -> tuple[list[dict[str, Any]], str | None]:
    """Run ``cmd``; return its JSON lines and an error description (None if it succeeded)."""
    try:
        proc = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return json_lines(out), f"timed out after {timeout:.0f}s"
    rows = json_lines(proc.stdout)
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        return rows, f"exit {proc.returncode}: {' | '.join(tail)}"
    return rows, None


def dbos_command(
    env: PeerEnv,
    peer_dir: Path,
    backend: str,
    pg_url: str,
    n: int,
    w: int,
    lat_runs: int,
    diag: bool,
) -> list[str]:
    cmd = [
        str(env.python),
        str(REPO / "bench" / "dbos_pragmas.py"),
        str(peer_dir / HARNESS),
        "--backend", backend,
        "--pg-url", pg_url,
        "--runs", "1",
        "--n", str(n),
        "--w", str(w),
        "--lat-runs", str(lat_runs),
        "--skip-queue",
    ]  # fmt: skip
    if diag:
        cmd.append("--diag")
    return cmd


def dbos_pragma_env(config: str) -> dict[str, str]:
    journal, synchronous = DBOS_SQLITE_CONFIGS[config]
    return {"STEPSTONE_BENCH_JOURNAL": journal, "STEPSTONE_BENCH_SYNCHRONOUS": synchronous}


def floor_command(env: PeerEnv, peer_dir: Path, n: int, pg_url: str | None) -> list[str]:
    cmd = [str(env.python), str(peer_dir / FLOOR), "--n", str(n)]
    if pg_url:
        cmd += ["--pg-url", pg_url]
    return cmd
