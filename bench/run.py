"""``make bench``: Stepstone side by side with DBOS Transact 3.4.0, and Stepstone alone.

One run does, in order: the disk's commit floor (shared ``sqlite_floor.py``); then, for each
round, each backend (SQLite FULL, SQLite NORMAL, PostgreSQL) with Stepstone and DBOS
alternating (who goes first flips every round), each in a fresh process on a fresh database;
then Stepstone's memory with sleeping instances and the instances list with many stored.
Medians over rounds and Stepstone/DBOS ratios are printed, written to
``bench/results/<date>-<name>.json`` and rendered to ``docs/performance.md``.

    .venv/bin/python bench/run.py            # the default run (~12 min on 2 cores)
    .venv/bin/python bench/run.py --quick    # a smaller run (~2 min), name "quick"
    .venv/bin/python bench/run.py --help
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import peer, report  # noqa: E402

DEFAULT_PG = os.environ.get(
    "STEPSTONE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ALL_BACKENDS = ("sqlite_full", "sqlite_normal", "postgres")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Stepstone vs DBOS benchmark suite",
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, one round")
    ap.add_argument("--runs", type=int, help="rounds per backend (default 3, quick 1)")
    ap.add_argument("--name", help="result name (default: full, or quick)")
    ap.add_argument("--backends", default=",".join(ALL_BACKENDS), help="comma-separated")
    ap.add_argument("--pg-url", default=DEFAULT_PG)
    ap.add_argument("--peer-dir", help="directory of dbos_bench.py and sqlite_floor.py")
    ap.add_argument("--venv", default=str(REPO / ".venv-bench"), help="DBOS venv")
    ap.add_argument("--n", type=int, help="steps in the sequential workflow (1000)")
    ap.add_argument("--w", type=int, help="concurrent 3-step workflows (500)")
    ap.add_argument("--lat-runs", type=int, help="latency samples (200)")
    ap.add_argument("--memory-counts", help="sleeping instances, comma-separated (10000,100000)")
    ap.add_argument("--list-count", type=int, help="instances stored for the list (1000000)")
    ap.add_argument("--skip-dbos", action="store_true")
    ap.add_argument("--no-dbos-wal-full", action="store_true", help="skip DBOS with WAL+FULL")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-list", action="store_true")
    ap.add_argument("--skip-floor", action="store_true")
    ap.add_argument("--skip-http", action="store_true")
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
        "runs": 1 if quick else 3,
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.http_into:
        http_into(args)
        return 0
    started = time.perf_counter()
    load_start = os.getloadavg()
    env = peer.PeerEnv(Path(args.venv))
    peer_dir = peer.find_peer_dir(args.peer_dir)
    env.ensure(log=log)
    log(f"peer harness: {peer_dir}; DBOS venv: {env.venv}")

    skipped: dict[str, str] = {}
    stepstone_rows: dict[str, list[dict[str, Any]]] = {}
    dbos_rows: dict[str, list[dict[str, Any]]] = {}
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

    floor: list[dict[str, Any]] = []
    if not args.skip_floor:
        log("disk floor (sqlite_floor.py)")
        floor, err = peer.run_json(
            peer.floor_command(env, peer_dir, 1000, args.pg_url if use_pg and pg_ver else None),
            timeout=300,
        )
        if err:
            errors.append(f"sqlite_floor: {err}")

    dbos_configs = {
        "sqlite_full": ["default"] + ([] if args.no_dbos_wal_full else ["wal_full"]),
        "sqlite_normal": ["wal_normal"],
        "postgres": ["postgres"],
    }

    def run_stepstone(backend: str, run: int) -> None:
        if backend == "postgres" and ("postgres" in skipped or "stepstone:postgres" in skipped):
            return
        extra = [
            "--backend", backend, "--run", str(run), "--n", str(args.n), "--w", str(args.w),
            "--lat-runs", str(args.lat_runs),
        ]  # fmt: skip
        if run == 0:
            extra += ["--diag", "--handle-wait-runs", "50"]
        log(f"round {run}: Stepstone {backend}")
        settle(env, None if "postgres" in skipped else args.pg_url)
        rows, err = peer.run_json(stepstone_cmd(args, *extra), cwd=REPO, timeout=900)
        stepstone_rows.setdefault(backend, []).extend(rows)
        if err:
            errors.append(f"Stepstone {backend} run {run}: {err}")
            log(f"  failed: {err}")

    def run_dbos(backend: str, run: int) -> None:
        if args.skip_dbos or (backend == "postgres" and "postgres" in skipped):
            return
        for config in dbos_configs[backend]:
            key = "postgres" if backend == "postgres" else f"sqlite:{config}"
            kind = "postgres" if backend == "postgres" else "sqlite"
            log(f"round {run}: DBOS {key}")
            cmd = peer.dbos_command(
                env, peer_dir, kind, args.pg_url, args.n, args.w, args.lat_runs, run == 0
            )
            extra_env = {} if kind == "postgres" else peer.dbos_pragma_env(config)
            settle(env, None if "postgres" in skipped else args.pg_url)
            rows, err = peer.run_json(cmd, env=extra_env, timeout=900)
            for r in rows:
                r["run"] = run
            dbos_rows.setdefault(key, []).extend(rows)
            if err:
                errors.append(f"DBOS {key} run {run}: {err}")
                log(f"  failed: {err}")

    for run in range(args.runs):
        for backend in args.backends:
            order = [run_stepstone, run_dbos] if run % 2 == 0 else [run_dbos, run_stepstone]
            for fn in order:
                fn(backend, run)

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

    if args.no_dbos_wal_full or args.skip_dbos:
        summary.pop("sqlite_full_wal", None)

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
            "loadavg_1_5_15_start": [round(x, 2) for x in load_start],
            "loadavg_1_5_15_end": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {
            "stepstone": env_rows[0]["stepstone"] if env_rows else None,
            "git": git_describe(),
            "dbos": dbos_env[0]["dbos"] if dbos_env else None,
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
        },
        "dbos_sqlite_pragmas": pragmas,
        "skipped": skipped,
        "floor": floor,
        "summary": summary,
        "stepstone_extra": stepstone_extra(stepstone_rows),
        "diag": diag_rows(stepstone_rows, dbos_rows),
        "memory": memory,
        "list": listing,
        "http": http,
        "errors": errors,
        "notes": notes,
        "raw": {"stepstone": stepstone_rows, "dbos": dbos_rows},
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
    err = ""
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
    print(f"Stepstone vs DBOS (median of {result['config']['runs']} run(s)):")
    print(report.console_table(report.comparison_rows(result["summary"]), report.HEADER))
    for cid, entry in result["summary"].items():
        print(f"  {cid}: {entry['durability']}")
    for r in result["memory"]:
        print(f"memory: {json.dumps(r)}")
    for r in result["list"]:
        print(f"list: {json.dumps(r)}")
    print(f"http: {json.dumps(result['http'])}")
    for e in result["errors"]:
        print(f"ERROR: {e}")


if __name__ == "__main__":
    sys.exit(main())
