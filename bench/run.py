"""``make bench``: Stepstone beside DBOS Transact 3.4.0, Restate 1.7.12 and Absurd 0.5.1.

First the peers' environments are made ready (``bench/peer.py``: each in its own venv or npm
prefix under ``~/.cache/stepstone-bench/``, installed from the registries on first use, left
alone after). Then the run goes in rounds: a round runs every cell once (the disk's commit
floor; Stepstone embedded on SQLite FULL, SQLite NORMAL and PostgreSQL; Stepstone's HTTP API
on SQLite FULL; DBOS on its SQLite configurations and PostgreSQL; Restate over its HTTP
ingress; Absurd on PostgreSQL), each in a fresh process on a fresh database or server, in an
order that rotates from round to round. Then Stepstone alone: memory with sleeping instances,
the instances list with many stored, the step endpoint under load. Medians over rounds,
Stepstone/peer ratios per round and the durability of each side are printed, written to
``bench/results/<date>-<name>.json`` and rendered to ``docs/performance.md``.

    .venv/bin/python bench/run.py            # the default run (5 rounds, ~25 min on 2 cores)
    .venv/bin/python bench/run.py --quick    # a smaller run (~3 min), name "quick"
    .venv/bin/python bench/run.py --help
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import durability, peer, report  # noqa: E402

DEFAULT_PG = os.environ.get(
    "STEPSTONE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ALL_BACKENDS = ("sqlite_full", "sqlite_normal", "postgres")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Stepstone beside DBOS, Restate and Absurd",
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, one round")
    ap.add_argument("--runs", type=int, help="rounds (default 5, quick 1)")
    ap.add_argument("--name", help="result name (default: full, or quick)")
    ap.add_argument("--backends", default=",".join(ALL_BACKENDS), help="comma-separated")
    ap.add_argument("--pg-url", default=DEFAULT_PG)
    ap.add_argument("--peer-dir", help="directory of dbos_bench.py and sqlite_floor.py")
    ap.add_argument("--venv", default=str(peer.DBOS_VENV), help="DBOS venv")
    ap.add_argument("--n", type=int, help="steps in the sequential workflow (1000)")
    ap.add_argument("--w", type=int, help="concurrent 3-step workflows (500)")
    ap.add_argument("--lat-runs", type=int, help="latency samples (200)")
    ap.add_argument("--memory-counts", help="sleeping instances, comma-separated (10000,100000)")
    ap.add_argument("--list-count", type=int, help="instances stored for the list (1000000)")
    ap.add_argument("--skip-dbos", action="store_true")
    ap.add_argument("--skip-restate", action="store_true")
    ap.add_argument("--skip-absurd", action="store_true")
    ap.add_argument("--skip-durability", action="store_true", help="no strace fsync count")
    ap.add_argument(
        "--max-load",
        type=float,
        help="run a round again if the 1-minute load average passed this (default: never)",
    )
    ap.add_argument("--max-extra", type=int, default=3, help="rounds run again at most")
    ap.add_argument("--no-dbos-wal-full", action="store_true", help="skip DBOS with WAL+FULL")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-list", action="store_true")
    ap.add_argument("--skip-floor", action="store_true")
    ap.add_argument("--skip-http", action="store_true", help="no Stepstone HTTP cell or load")
    ap.add_argument(
        "--http-into",
        metavar="RESULT",
        help="measure only HTTP, into bench/results/RESULT, and re-render the docs",
    )
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    ap.add_argument("--concurrency", type=int, help="Stepstone worker concurrency (default)")
    args = ap.parse_args(argv)
    quick = args.quick
    defaults = {
        "runs": 1 if quick else 5,
        "name": "quick" if quick else "full",
        "n": 200 if quick else 1000,
        "w": 100 if quick else 500,
        "lat_runs": 50 if quick else 200,
        "memory_counts": "1000,10000" if quick else "10000,100000",
        "list_count": 100_000 if quick else 1_000_000,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if quick:
        args.no_dbos_wal_full = True
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = set(args.backends) - set(ALL_BACKENDS)
    if unknown:
        ap.error(f"unknown backends {sorted(unknown)}; choose from {ALL_BACKENDS}")
    return args


def stepstone_cmd(args: argparse.Namespace, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "bench.stepstone_bench", "--pg-url", args.pg_url, *extra]
    if args.concurrency:
        cmd += ["--concurrency", str(args.concurrency)]
    return cmd


def git_describe() -> str:
    def git(*a: str) -> str:
        out = subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "stepstone")
    return commit + ("+dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def pg_version(env: peer.PeerEnv, url: str) -> str | None:
    code = (
        "import psycopg, sys\n"
        "with psycopg.connect(sys.argv[1]) as c:\n"
        "    print(c.execute('SHOW server_version').fetchone()[0])\n"
    )
    out = subprocess.run(
        [str(env.python), "-c", code, url], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or None


def settle(env: peer.PeerEnv, pg_url: str | None) -> None:
    """Start each measured process on a settled disk: what the previous one left dirty (a
    run at synchronous=NORMAL, PostgreSQL's shared buffers) is written out now, not behind the
    next one's fsyncs."""
    if pg_url:
        code = "import psycopg, sys\nwith psycopg.connect(sys.argv[1], autocommit=True) as c:\n"
        code += "    c.execute('CHECKPOINT')\n"
        subprocess.run([str(env.python), "-c", code, pg_url], capture_output=True, check=False)
    os.sync()


@dataclass
class Cell:
    """One system in one configuration: a command run once per round, in a fresh process."""

    key: str
    cmd: Callable[[int], list[str]]  # round -> command
    env: dict[str, str] = field(default_factory=dict)
    pg: bool = False


def build_cells(
    args: argparse.Namespace,
    env: peer.PeerEnv,
    peer_dir: Path,
    skipped: dict[str, str],
    peers: dict[str, Any],
) -> list[Cell]:
    sizes = ["--n", str(args.n), "--w", str(args.w), "--lat-runs", str(args.lat_runs)]
    cells: list[Cell] = []
    pg_ok = "postgres" not in skipped
    if not args.skip_floor:
        floor_pg = args.pg_url if pg_ok and "postgres" in args.backends else None
        cells.append(Cell("floor", lambda r: peer.floor_command(env, peer_dir, 1000, floor_pg)))

    def stepstone(backend: str) -> Callable[[int], list[str]]:
        def cmd(run: int) -> list[str]:
            extra = ["--backend", backend, "--run", str(run), *sizes]
            if run == 0:
                extra += ["--diag", "--handle-wait-runs", "50"]
            return stepstone_cmd(args, *extra)

        return cmd

    for backend in args.backends:
        if backend == "postgres" and (not pg_ok or "stepstone:postgres" in skipped):
            continue
        cells.append(Cell(f"stepstone:{backend}", stepstone(backend), pg=backend == "postgres"))
    if "sqlite_full" in args.backends and not args.skip_http:
        http = [sys.executable, "-m", "bench.stepstone_http", "--backend", "sqlite_full", *sizes]
        cells.append(Cell("stepstone:http_sqlite_full", lambda r: [*http, "--run", str(r)]))

    if not args.skip_dbos:
        dbos_configs = {
            "sqlite_full": ["default"] + ([] if args.no_dbos_wal_full else ["wal_full"]),
            "sqlite_normal": ["wal_normal"],
            "postgres": ["postgres"],
        }
        for backend in args.backends:
            if backend == "postgres" and not pg_ok:
                continue
            for config in dbos_configs[backend]:
                kind = "postgres" if backend == "postgres" else "sqlite"
                key = "dbos:postgres" if kind == "postgres" else f"dbos:sqlite:{config}"

                def dbos(run: int, kind: str = kind) -> list[str]:
                    return peer.dbos_command(
                        env, peer_dir, kind, args.pg_url, args.n, args.w, args.lat_runs, run == 0
                    )

                extra_env = {} if kind == "postgres" else peer.dbos_pragma_env(config)
                cells.append(Cell(key, dbos, extra_env, pg=kind == "postgres"))

    if "restate" in peers:
        restate = [
            str(peers["restate"].python), "-m", "bench.restate_peer",
            "--server", str(peers["restate_server"]), *sizes,
        ]  # fmt: skip
        cells.append(Cell("restate:default", lambda r: [*restate, "--run", str(r)]))
    if "absurd" in peers:
        absurd = [
            str(peers["absurd"].python), "-m", "bench.absurd_peer", "--pg-url", args.pg_url,
            *sizes,
        ]  # fmt: skip
        cells.append(Cell("absurd:postgres", lambda r: [*absurd, "--run", str(r)], pg=True))
    return cells


def setup_peers(args: argparse.Namespace, pg_ok: bool, skipped: dict[str, str]) -> dict[str, Any]:
    """Build Restate's and Absurd's environments (idempotent); a peer that cannot be installed
    is reported as skipped and the rest of the run goes on."""
    peers: dict[str, Any] = {}
    if not args.skip_restate:
        try:
            restate = peer.restate_env()
            restate.ensure(log=log)
            peers["restate_server"] = peer.RestateServer().ensure(log=log)
            peers["restate"] = restate
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            skipped["restate"] = f"could not be installed: {exc}"
            log(f"Restate skipped: {exc}")
    if not args.skip_absurd:
        if not pg_ok:
            skipped["absurd"] = "no PostgreSQL"
        else:
            try:
                absurd = peer.absurd_env()
                absurd.ensure(log=log)
                peers["absurd"] = absurd
            except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
                skipped["absurd"] = f"could not be installed: {exc}"
                log(f"Absurd skipped: {exc}")
    return peers


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_rounds(
    args: argparse.Namespace, env: peer.PeerEnv, cells: list[Cell], errors: list[str]
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Every cell once per round, the order rotated each round. With ``--max-load``, a round
    whose 1-minute load average passed it is run again (up to ``--max-extra`` times) and left
    out of the figures."""
    rows: dict[str, list[dict[str, Any]]] = {c.key: [] for c in cells}
    rounds: list[dict[str, Any]] = []
    valid = extra = attempt = 0
    while valid < args.runs and cells:
        shift = attempt % len(cells)
        order = cells[shift:] + cells[:shift]
        info: dict[str, Any] = {
            "run": attempt,
            "order": [c.key for c in order],
            "loadavg_before": loadavg(),
            "cells": {},
        }
        log(f"round {attempt}: load {info['loadavg_before'][0]}; order {info['order']}")
        peak = info["loadavg_before"][0]
        for cell in order:
            # Every cell, PostgreSQL or not, starts after a CHECKPOINT: the previous cell's
            # dirty shared buffers are not written behind this one's fsyncs.
            settle(env, args.pg_url if args.pg_ok else None)
            before, t = loadavg(), time.perf_counter()
            log(f"round {attempt}: {cell.key}")
            got, err = peer.run_json(cell.cmd(attempt), env=cell.env, cwd=REPO, timeout=900)
            for r in got:
                r["run"] = attempt
            rows[cell.key].extend(got)
            after = loadavg()
            peak = max(peak, after[0])
            info["cells"][cell.key] = {
                "seconds": round(time.perf_counter() - t, 1),
                "loadavg_before": before,
                "loadavg_after": after,
                **({"error": err} if err else {}),
            }
            if err:
                errors.append(f"{cell.key} round {attempt}: {err}")
                log(f"  failed: {err}")
        info["peak_load1"] = peak
        info["valid"] = True
        if args.max_load and peak > args.max_load and extra < args.max_extra:
            info["valid"] = False
            extra += 1
            log(f"  load average reached {peak} > {args.max_load}: the round is run again")
        valid += info["valid"]
        rounds.append(info)
        attempt += 1
    return rows, rounds


def pg_settings(env: peer.PeerEnv, url: str) -> dict[str, str]:
    code = (
        "import json, psycopg, sys\n"
        "names = ['fsync', 'synchronous_commit', 'wal_sync_method', 'commit_delay',"
        " 'full_page_writes']\n"
        "with psycopg.connect(sys.argv[1]) as c:\n"
        "    print(json.dumps({n: c.execute('SHOW ' + n).fetchone()[0] for n in names}))\n"
    )
    out = subprocess.run(
        [str(env.python), "-c", code, url], capture_output=True, text=True, check=False
    )
    try:
        found: dict[str, str] = json.loads(out.stdout)
    except json.JSONDecodeError:
        return {}
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.http_into:
        http_into(args)
        return 0
    started = time.perf_counter()
    load_start = os.getloadavg()
    env = peer.dbos_env(Path(args.venv))
    peer_dir = peer.find_peer_dir(args.peer_dir)
    env.ensure(log=log)
    log(f"DBOS harness: {peer_dir / peer.HARNESS}; DBOS venv: {env.venv}")

    skipped: dict[str, str] = {}
    errors: list[str] = []
    notes: list[str] = []

    use_pg = "postgres" in args.backends
    pg_ver = pg_version(env, args.pg_url) if use_pg else None
    if use_pg and pg_ver is None:
        skipped["postgres"] = f"no PostgreSQL at {args.pg_url}"

    # Stepstone's PostgreSQL store is being built: run its rows only where it opens.
    if use_pg and "postgres" not in skipped:
        rows, err = peer.run_json(
            stepstone_cmd(args, "--mode", "probe", "--backend", "postgres"), cwd=REPO, timeout=120
        )
        probe = next((r for r in rows if r.get("bench") == "probe"), None)
        if probe is None or not probe.get("ok"):
            reason = (probe or {}).get("reason") or err or "probe failed"
            skipped["stepstone:postgres"] = f"open_storage('postgresql://...') fails: {reason}"
            log(f"Stepstone PostgreSQL skipped: {reason}")

    args.pg_ok = pg_ver is not None
    peers = setup_peers(args, use_pg and "postgres" not in skipped, skipped)
    cells = build_cells(args, env, peer_dir, skipped, peers)
    cell_rows, rounds = run_rounds(args, env, cells, errors)
    valid_runs = [r["run"] for r in rounds if r["valid"]]
    cell_rows = {k: [r for r in rs if r.get("run") in valid_runs] for k, rs in cell_rows.items()}
    floor = cell_rows.pop("floor", [])

    stepstone_rows = {
        k.split(":", 1)[1]: rs
        for k, rs in cell_rows.items()
        if k.startswith("stepstone:") and not k.startswith("stepstone:http")
    }
    dbos_rows = {k.split(":", 1)[1]: rs for k, rs in cell_rows.items() if k.startswith("dbos:")}
    stepstone_skips = {}
    for key in ("postgres", "stepstone:postgres"):
        if key in skipped:
            stepstone_skips["postgres"] = skipped[key]
    summary = report.summarize(
        stepstone_rows,
        dbos_rows,
        stepstone_skips,
        {"postgres": skipped["postgres"]} if "postgres" in skipped else {},
    )
    peer_summary = report.summarize_cells({**cell_rows, "floor": floor}, valid_runs)

    if args.no_dbos_wal_full or args.skip_dbos:
        summary.pop("sqlite_full_wal", None)

    strace: dict[str, Any] = {}
    if args.skip_durability:
        pass
    elif shutil.which("strace") is None:
        skipped["durability"] = "strace is not installed: fsync calls and round trips not counted"
    else:
        log("durability: fsync calls per step and PostgreSQL round trips (strace, not timed)")
        harness = {
            key: [str(peers[key].python), "-m", f"bench.{key}_peer"]
            for key in ("restate", "absurd")
            if key in peers
        }
        if "restate" in harness:
            harness["restate"] += ["--server", str(peers["restate_server"])]
        if "absurd" in harness:
            harness["absurd"] += ["--pg-url", args.pg_url]
        strace = durability.measure(
            args.pg_url if "stepstone:postgres" in cell_rows else None,
            harness.get("restate"),
            harness.get("absurd"),
            steps=200 if args.quick else 1000,
            trips=50 if args.quick else 200,
        )
        errors += [f"durability: {e}" for e in strace.pop("errors")]

    memory: list[dict[str, Any]] = []
    if not args.skip_memory:
        for count in [int(c) for c in args.memory_counts.split(",") if c]:
            log(f"Stepstone memory with {count:,} sleeping instances")
            rows, err = peer.run_json(
                stepstone_cmd(args, "--mode", "memory", "--count", str(count)),
                cwd=REPO,
                timeout=1800,
            )
            got = [r for r in rows if r.get("bench") == "memory"]
            memory += got or [{"instances": count, "error": err or "no result"}]

    listing: list[dict[str, Any]] = []
    if not args.skip_list:
        log(f"Stepstone instances list with {args.list_count:,} stored")
        rows, err = peer.run_json(
            stepstone_cmd(args, "--mode", "list", "--count", str(args.list_count)),
            cwd=REPO,
            timeout=1800,
        )
        got = [r for r in rows if r.get("bench") == "list"]
        listing += got or [{"instances": args.list_count, "error": err or "no result"}]

    http = {} if args.skip_http else http_bench(args)
    env_rows = [r for rows in stepstone_rows.values() for r in rows if r.get("bench") == "env"]
    dbos_env = [r for rows in dbos_rows.values() for r in rows if r.get("bench") == "env"]

    def env_of(cell: str) -> dict[str, Any]:
        return next((r for r in cell_rows.get(cell, []) if r.get("bench") == "env"), {})

    restate_env, absurd_env = env_of("restate:default"), env_of("absurd:postgres")
    pragmas = {
        key: next((r for r in rows if r.get("bench") == "dbos_sqlite_pragmas"), None)
        for key, rows in dbos_rows.items()
        if key.startswith("sqlite:")
    }
    date = dt.date.today().isoformat()
    file_name = f"{date}-{args.name}.json"
    result: dict[str, Any] = {
        "name": args.name,
        "file": file_name,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {
            **machine_info(),
            "postgres": pg_ver,
            "postgres_settings": pg_settings(env, args.pg_url) if pg_ver else {},
            "loadavg_1_5_15_start": [round(x, 2) for x in load_start],
            "loadavg_1_5_15_end": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {
            "stepstone": env_rows[0]["stepstone"] if env_rows else None,
            "git": git_describe(),
            "dbos": dbos_env[0]["dbos"] if dbos_env else None,
            "restate_server": (restate_env.get("server") or "").rpartition(" ")[2] or None,
            "restate_sdk": restate_env.get("sdk"),
            "hypercorn": restate_env.get("hypercorn"),
            "absurd_sdk": absurd_env.get("absurd_sdk"),
            "absurdctl": absurd_env.get("absurdctl"),
        },
        "config": {
            "runs": args.runs,
            "n": args.n,
            "w": args.w,
            "lat_runs": args.lat_runs,
            "backends": args.backends,
            "worker": env_rows[0]["worker"] if env_rows else None,
            "pg_url": args.pg_url,
            "peer_dir": str(peer_dir),
            "cells": [c.key for c in cells],
            "max_load": args.max_load,
        },
        "rounds": rounds,
        "dbos_sqlite_pragmas": pragmas,
        "skipped": skipped,
        "floor": floor,
        "summary": summary,
        "peers": peer_summary,
        "durability": strace,
        "stepstone_extra": stepstone_extra(stepstone_rows),
        "diag": diag_rows(stepstone_rows, dbos_rows),
        "memory": memory,
        "list": listing,
        "http": http,
        "errors": errors,
        "notes": notes,
        "raw": cell_rows,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / file_name).write_text(json.dumps(result, indent=1) + "\n")
    print_summary(result)
    if not args.no_docs:
        (REPO / "docs").mkdir(exist_ok=True)
        (REPO / "docs" / "performance.md").write_text(report.render_markdown(result))
        log("wrote docs/performance.md")
    log(f"wrote bench/results/{file_name} in {result['elapsed_s']:.0f}s")
    return 1 if errors else 0


def stepstone_extra(rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for backend, rs in rows.items():
        figs = {
            "create + InstanceHandle.wait() p50 ms (public, polling)": report.median_of(
                rs, "lat_handle_wait", "p50_ms"
            ),
            "create + InstanceHandle.wait() p99 ms": report.median_of(
                rs, "lat_handle_wait", "p99_ms"
            ),
            "500 x 3-step: start phase s": report.median_of(rs, "tput_start", "start_phase_s"),
        }
        out[backend] = {k: v for k, v in figs.items() if v is not None}
    return out


def diag_rows(
    stepstone: dict[str, list[dict[str, Any]]], dbos: dict[str, list[dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    out = {}
    for system, groups in (("stepstone", stepstone), ("dbos", dbos)):
        for key, rs in groups.items():
            for r in rs:
                if r.get("bench") == "diag" and "skipped" not in r:
                    out[f"{system}:{key}"] = r
                    break
    return out


def http_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Over HTTP, when the REST API (``stepstone.server.run_server``) is there: the median of
    ``--runs`` rounds, each on a fresh server and database."""
    code = "import stepstone.server as s; assert callable(s.run_server)"
    probe = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return {
            "pending": "the REST API (stepstone.server.run_server) is not available yet:"
            " create-to-complete over HTTP and the step endpoint's req/s are not measured"
        }
    extra = [
        "--mode", "http", "--lat-runs", str(min(args.lat_runs, 200)),
        "--http-seconds", "3" if args.quick else "10", "--http-clients", "16",
    ]  # fmt: skip
    rounds: list[dict[str, Any]] = []
    err: str | None = None
    for run in range(args.runs):
        log(f"Stepstone over HTTP (create-to-complete, step endpoint under load), run {run}")
        rows, err = peer.run_json(stepstone_cmd(args, *extra), cwd=REPO, timeout=600)
        rounds += [r for r in rows if r.get("bench") == "http"]
    if not rounds:
        return {"error": err or "no result"}
    return {**report.median_http(rounds), "runs": len(rounds)}


def http_into(args: argparse.Namespace) -> None:
    """Measure HTTP alone into an existing result file, and render the docs from it again."""
    path = REPO / "bench" / "results" / args.http_into
    result = json.loads(path.read_text())
    load = [round(x, 2) for x in os.getloadavg()]
    http = http_bench(args)
    http["measured_separately"] = (
        f"Measured on its own on {dt.date.today().isoformat()} (git {git_describe()}, load"
        f" average {load[0]} at start), after the rest of this file; median of"
        f" {http.get('runs', 0)} run(s)."
    )
    result["http"] = http
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"http: {json.dumps(http)}")
    if not args.no_docs:
        (REPO / "docs" / "performance.md").write_text(report.render_markdown(result))


def print_summary(result: dict[str, Any]) -> None:
    print()
    print("Disk floor:")
    print(
        report.console_table(
            report.floor_rows(result["floor"]), ["config", "us/commit", "p50 us", "us/row"]
        )
    )
    print()
    print(f"Stepstone vs DBOS (median of {result['config']['runs']} round(s)):")
    print(report.console_table(report.comparison_rows(result["summary"]), report.HEADER))
    for cid, entry in result["summary"].items():
        print(f"  {cid}: {entry['durability']}")
    peers = result.get("peers") or {}
    if peers.get("cells"):
        header = [label for _, label in report.PEER_FIGURES]
        print()
        print(f"Every system (median (min-max) over {peers['rounds']} round(s)):")
        print(report.console_table(report.peer_rows(peers), ["system", *header]))
        print()
        print("Stepstone/peer, per round, then median (min-max):")
        print(report.console_table(report.pair_rows(peers), ["pair", *header]))
        if peers.get("floor"):
            print(f"SQLite FULL W1 per step / WAL FULL commit floor: {peers['floor']}")
    if result.get("durability"):
        print(f"durability: {json.dumps(result['durability'])}")
    for r in result["memory"]:
        print(f"memory: {json.dumps(r)}")
    for r in result["list"]:
        print(f"list: {json.dumps(r)}")
    print(f"http: {json.dumps(result['http'])}")
    for e in result["errors"]:
        print(f"ERROR: {e}")


if __name__ == "__main__":
    sys.exit(main())
