"""The peer side: DBOS Transact in its own venv, the shared harness, and the disk floor.

DBOS is never a Stepstone dependency: it lives in ``.venv-bench`` (gitignored by ``.venv-*/``),
created here on first use. The harness (``dbos_bench.py``) and the disk's commit floor
(``sqlite_floor.py``) are the shared ones in ``../shared/bench``, run unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DBOS_VERSION = "3.4.0"
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


def find_peer_dir(explicit: str | None = None) -> Path:
    """The directory holding the shared harness: flag, env, ../shared/bench, /work/shared."""
    candidates = [
        explicit,
        os.environ.get("STEPSTONE_BENCH_PEER_DIR"),
        REPO.parent / "shared" / "bench",
        REPO / ".." / ".." / "shared" / "bench",
        "/work/shared/bench",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / HARNESS).is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        f"cannot find {HARNESS}; pass --peer-dir or set STEPSTONE_BENCH_PEER_DIR "
        f"(looked in {[str(c) for c in candidates if c]})"
    )


@dataclass
class PeerEnv:
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def installed(self, package: str) -> str | None:
        if not self.python.exists():
            return None
        code = (
            "import importlib.metadata as m, sys\n"
            "try: print(m.version(sys.argv[1]))\n"
            "except m.PackageNotFoundError: pass\n"
        )
        out = subprocess.run(
            [str(self.python), "-c", code, package], capture_output=True, text=True, check=False
        )
        return out.stdout.strip() or None

    def ensure(self, extra: Sequence[str] = (), log: Any = print) -> None:
        """Create the venv and install DBOS (and ``extra`` tools) if missing."""
        if not self.python.exists():
            log(f"creating {self.venv} for DBOS {DBOS_VERSION} (not a Stepstone dependency)")
            subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
        wanted = []
        if self.installed("dbos") != DBOS_VERSION:
            wanted.append(f"dbos=={DBOS_VERSION}")
        wanted += [pkg for pkg in extra if self.installed(pkg) is None]
        if wanted:
            log(f"installing {' '.join(wanted)} into {self.venv}")
            subprocess.run(
                [str(self.python), "-m", "pip", "install", "-q", *wanted],
                check=True,
            )


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
