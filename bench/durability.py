"""What each side's durability costs in system calls, counted with strace (not timed).

- fsync-family calls per step (``fsync``, ``fdatasync``, ``sync_file_range``): the difference
  between a W1 of 1,001 steps and one of 1 step, over 1,000 (200 in a quick run), for
  Stepstone embedded on SQLite FULL, Restate (its whole server process tree) and DBOS on its
  SQLite default. PostgreSQL's syncs happen in the server, shared with whatever else uses it,
  so the PostgreSQL cells are described by their settings instead.
- PostgreSQL round trips per 1-step workflow: socket sends of the client process, the
  difference between a W3 of 220 runs and one of 20, over 200 (50 in a quick run), for
  Stepstone, Absurd and DBOS (whose harness runs W3 twice, started and called directly, so
  over twice as many). Absurd's worker polls at its default 0.25 s here, so that idle polls
  are not counted.

Run by ``bench/run.py`` when ``strace`` is installed; on its own::

    .venv/bin/python -m bench.durability
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import peer

SYNCS = ("fsync", "fdatasync", "sync_file_range")
SENDS = ("sendto", "sendmsg", "send")


def strace_total(path: Path, calls: tuple[str, ...]) -> int:
    """The call count of ``calls`` in an ``strace -c`` summary (columns: % time, seconds,
    usecs/call, calls, [errors,] syscall)."""
    total = 0
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in calls and parts[3].isdigit():
            total += int(parts[3])
    return total


def counted(
    cmd: list[str], calls: tuple[str, ...], out: Path, *, wrap_env: str | None = None
) -> tuple[int | None, str | None]:
    """Run ``cmd`` under ``strace -f -c``; with ``wrap_env`` the harness applies the prefix to
    the process it starts (Restate's server) instead."""
    prefix = ["strace", "-f", "-c", "-e", "trace=" + ",".join(calls), "-o", str(out)]
    env = {}
    if wrap_env:
        env[wrap_env] = " ".join(prefix)
    else:
        cmd = [*prefix, *cmd]
    _, err = peer.run_json(cmd, env=env, cwd=peer.REPO, timeout=600)
    if err:
        return None, err
    return strace_total(out, calls), None


def per_unit(
    name: str,
    small: list[str],
    large: list[str],
    units: int,
    calls: tuple[str, ...],
    tmp: Path,
    errors: list[str],
    wrap_env: str | None = None,
) -> float | None:
    a, err_a = counted(small, calls, tmp / f"{name}-small.txt", wrap_env=wrap_env)
    b, err_b = counted(large, calls, tmp / f"{name}-large.txt", wrap_env=wrap_env)
    if a is None or b is None:
        errors.append(f"{name}: {err_a or err_b}")
        return None
    return round((b - a) / units, 3)


def measure(
    pg_url: str | None,
    restate: list[str] | None,
    absurd: list[str] | None,
    steps: int = 1000,
    trips: int = 200,
) -> Any:
    """``restate`` and ``absurd``: the harness commands (python -m ...), or None to skip;
    ``steps`` and ``trips``: how many more steps (W1) and workflows (W3) the larger run has."""
    dbos = peer.dbos_env()
    harness = [str(dbos.python), str(peer.BENCH / peer.HARNESS), "--runs", "1", "--skip-queue"]
    stepstone = [sys.executable, "-m", "bench.stepstone_bench"]
    per_step: dict[str, float | None] = {}
    sends: dict[str, float | None] = {}
    errors: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="stepstone_bench_strace_"))
    try:

        def w1(cmd: list[str], n: int) -> list[str]:
            return [*cmd, "--n", str(n), "--w", "1", "--lat-runs", "1"]

        big, many = 1 + steps, 20 + trips
        per_step["stepstone:sqlite_full"] = per_unit(
            "stepstone", w1(stepstone, 1), w1(stepstone, big), steps, SYNCS, tmp, errors
        )
        if restate is not None:
            small = [*restate, "--only", "seq", "--n", "1"]
            large = [*restate, "--only", "seq", "--n", str(big)]
            per_step["restate:default"] = per_unit(
                "restate", small, large, steps, SYNCS, tmp, errors, "STEPSTONE_BENCH_RESTATE_WRAP"
            )
        dbos_sqlite = [*harness, "--backend", "sqlite"]
        per_step["dbos:sqlite:default"] = per_unit(
            "dbos", w1(dbos_sqlite, 1), w1(dbos_sqlite, big), steps, SYNCS, tmp, errors
        )
        if pg_url:

            def w3(cmd: list[str], runs: int) -> list[str]:
                return [*cmd, "--n", "1", "--w", "1", "--lat-runs", str(runs)]

            ss_pg = [*stepstone, "--backend", "postgres", "--pg-url", pg_url]
            sends["stepstone:postgres"] = per_unit(
                "stepstone-pg", w3(ss_pg, 20), w3(ss_pg, many), trips, SENDS, tmp, errors
            )
            if absurd is not None:
                # At the SDK's default idle poll (0.25 s), so that the count is what a
                # workflow needs, not the polls of an idle worker between two of them.
                small = [*absurd, "--only", "lat", "--lat-runs", "20", "--poll", "0.25"]
                large = [*absurd, "--only", "lat", "--lat-runs", str(many), "--poll", "0.25"]
                sends["absurd:postgres"] = per_unit(
                    "absurd", small, large, trips, SENDS, tmp, errors
                )
            dbos_pg = [*harness, "--backend", "postgres", "--pg-url", pg_url]
            sends["dbos:postgres"] = per_unit(
                "dbos-pg", w3(dbos_pg, 20), w3(dbos_pg, many), 2 * trips, SENDS, tmp, errors
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "per_step": {k: v for k, v in per_step.items() if v is not None},
        "pg_round_trips": {k: v for k, v in sends.items() if v is not None},
        "steps": steps,
        "trips": trips,
        "errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    server = peer.RestateServer().binary()
    restate = [str(peer.restate_env().python), "-m", "bench.restate_peer", "--server", str(server)]
    absurd = [str(peer.absurd_env().python), "-m", "bench.absurd_peer", "--pg-url", args.pg_url]
    print(json.dumps(measure(args.pg_url, restate if server else None, absurd), indent=1))


if __name__ == "__main__":
    main()
