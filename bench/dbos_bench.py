#!/usr/bin/env python3
# ruff: noqa: RUF046, PLW0603
# Copied from the project's shared bench folder and run unchanged: only its import lines and
# formatting were tidied for the repository's lint; the code as measured is kept as written.
"""DBOS Transact (Python) baseline benchmark.

Self-contained: every run uses a FRESH system database (a new SQLite file in a
new temp dir, or a new, uniquely named Postgres database that is dropped at the
end). Prints one JSON object per line.

Benchmarks (per backend, per run):
  seq         one workflow with N no-op steps, each returning a small dict
              -> steps/s, us/step (total) and us/step (marginal: minus the
              time of a 0-step workflow)
  tput_start  W workflows x 3 steps started concurrently with
              DBOS.start_workflow (DBOS runs each on its executor thread pool),
              then wait for all -> workflows/s
  tput_queue  same W x 3, but enqueued on a DBOS Queue (worker polls the DB),
              then wait for all -> workflows/s
  lat_start   start-to-complete latency of a 1-step workflow started with
              DBOS.start_workflow + handle.get_result(), L sequential runs
              -> p50/p99/mean in ms
  lat_direct  same, but calling the workflow function directly (synchronous,
              runs in the caller's thread)
  lat_queue   same, via Queue.enqueue + get_result(polling) (bounded by the
              queue polling interval; reported for context)
  diag        (only with --diag) one 200-step workflow with SQLAlchemy event
              counters on DBOS's system-DB engine: SQL statements and commits
              per step, and process CPU time per step vs wall time per step.
              Uses a DBOS internal (the global instance's _sys_db.engine);
              skipped with a note if that attribute is not there.

Usage:
  python dbos_bench.py --backend sqlite
  python dbos_bench.py --backend postgres --pg-url postgresql://postgres@127.0.0.1:55432/postgres
  python dbos_bench.py --backend both --runs 3 --pg-url ...

Requires: pip install dbos==3.4.0  (psycopg ships with it for Postgres)
"""

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid

from dbos import DBOS, DBOSConfig

# ----------------------------------------------------------------------------
# Workflows and steps (registered at import, before DBOS() is constructed)
# ----------------------------------------------------------------------------


def plain_noop(i: int) -> dict:
    return {"i": i, "ok": True}


@DBOS.step()
def noop_step(i: int) -> dict:
    return {"i": i, "ok": True}


@DBOS.workflow()
def seq_wf(n: int) -> int:
    for i in range(n):
        noop_step(i)
    return n


@DBOS.workflow()
def three_step_wf(k: int) -> int:
    for i in range(3):
        noop_step(i)
    return k


@DBOS.workflow()
def one_step_wf(k: int) -> int:
    noop_step(k)
    return k


QUEUE = None  # created in main() so the polling interval is configurable


def pct(sorted_vals, p):
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def lat_stats(samples_s):
    s = sorted(samples_s)
    return {
        "p50_ms": round(pct(s, 50) * 1e3, 3),
        "p90_ms": round(pct(s, 90) * 1e3, 3),
        "p99_ms": round(pct(s, 99) * 1e3, 3),
        "mean_ms": round(statistics.fmean(s) * 1e3, 3),
        "max_ms": round(s[-1] * 1e3, 3),
    }


# ----------------------------------------------------------------------------
# Backend lifecycle
# ----------------------------------------------------------------------------


class Backend:
    def __init__(self, kind, pg_url=None):
        self.kind = kind
        self.pg_url = pg_url
        self.tmpdir = None
        self.dbname = None

    def url(self):
        if self.kind == "sqlite":
            self.tmpdir = tempfile.mkdtemp(prefix="dbos_bench_")
            return "sqlite:///" + os.path.join(self.tmpdir, "dbos_sys.sqlite")
        import sqlalchemy as sa

        self.dbname = "dbos_bench_" + uuid.uuid4().hex[:10]
        return (
            sa.make_url(self.pg_url).set(database=self.dbname).render_as_string(hide_password=False)
        )

    def cleanup(self):
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        if self.dbname:
            import psycopg
            import sqlalchemy as sa

            u = sa.make_url(self.pg_url)
            conninfo = dict(
                host=u.host or "127.0.0.1",
                port=u.port or 5432,
                user=u.username or "postgres",
                dbname=u.database or "postgres",
            )
            if u.password:
                conninfo["password"] = u.password
            with psycopg.connect(**conninfo, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            self.dbname = None


def launch(url):
    config: DBOSConfig = {
        "name": "dbos-bench",
        "system_database_url": url,
        "log_level": "WARNING",
        "console_log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()


def shutdown():
    DBOS.destroy(destroy_registry=False)


# ----------------------------------------------------------------------------
# Benchmarks
# ----------------------------------------------------------------------------


def bench_seq(n, reps_empty=20):
    # warm-up (connections, code paths)
    seq_wf(10)
    # plain Python cost of the same loop, for reference
    t = time.perf_counter()
    for i in range(n):
        plain_noop(i)
    plain = time.perf_counter() - t
    # empty workflow cost (workflow start + finish bookkeeping)
    empt = []
    for _ in range(reps_empty):
        t = time.perf_counter()
        seq_wf(0)
        empt.append(time.perf_counter() - t)
    empty_s = statistics.median(empt)
    t = time.perf_counter()
    r = seq_wf(n)
    dt = time.perf_counter() - t
    assert r == n
    return {
        "n_steps": n,
        "seconds": round(dt, 4),
        "steps_per_s": round(n / dt, 1),
        "us_per_step": round(dt / n * 1e6, 1),
        "us_per_step_marginal": round((dt - empty_s) / n * 1e6, 1),
        "empty_wf_ms": round(empty_s * 1e3, 3),
        "plain_python_us_per_call": round(plain / n * 1e6, 3),
    }


def bench_tput_start(w):
    t = time.perf_counter()
    handles = [DBOS.start_workflow(three_step_wf, k) for k in range(w)]
    t_started = time.perf_counter() - t
    res = [h.get_result() for h in handles]
    dt = time.perf_counter() - t
    assert res == list(range(w))
    return {
        "workflows": w,
        "steps_per_wf": 3,
        "seconds": round(dt, 4),
        "wf_per_s": round(w / dt, 1),
        "steps_per_s": round(3 * w / dt, 1),
        "start_phase_s": round(t_started, 4),
    }


def bench_tput_queue(w, result_poll):
    t = time.perf_counter()
    handles = [QUEUE.enqueue(three_step_wf, k) for k in range(w)]
    t_enq = time.perf_counter() - t
    res = [h.get_result(polling_interval_sec=result_poll) for h in handles]
    dt = time.perf_counter() - t
    assert res == list(range(w))
    return {
        "workflows": w,
        "steps_per_wf": 3,
        "seconds": round(dt, 4),
        "wf_per_s": round(w / dt, 1),
        "steps_per_s": round(3 * w / dt, 1),
        "enqueue_phase_s": round(t_enq, 4),
    }


def bench_lat_start(runs):
    for i in range(5):  # warm-up
        DBOS.start_workflow(one_step_wf, i).get_result()
    samples = []
    for i in range(runs):
        t = time.perf_counter()
        r = DBOS.start_workflow(one_step_wf, i).get_result()
        samples.append(time.perf_counter() - t)
        assert r == i
    return {"runs": runs, **lat_stats(samples)}


def bench_lat_direct(runs):
    for i in range(5):
        one_step_wf(i)
    samples = []
    for i in range(runs):
        t = time.perf_counter()
        r = one_step_wf(i)
        samples.append(time.perf_counter() - t)
        assert r == i
    return {"runs": runs, **lat_stats(samples)}


def bench_lat_queue(runs, result_poll):
    QUEUE.enqueue(one_step_wf, -1).get_result(polling_interval_sec=result_poll)
    samples = []
    for i in range(runs):
        t = time.perf_counter()
        r = QUEUE.enqueue(one_step_wf, i).get_result(polling_interval_sec=result_poll)
        samples.append(time.perf_counter() - t)
        assert r == i
    return {"runs": runs, **lat_stats(samples)}


def bench_diag(n=200):
    import resource

    from sqlalchemy import event

    try:
        import dbos._dbos as _dd

        eng = _dd._dbos_global_instance._sys_db.engine  # internal, may change
    except Exception as e:  # pragma: no cover
        return {"skipped": f"cannot reach system DB engine: {e!r}"}
    counts = {"statements": 0, "commits": 0}

    def on_exec(*_a, **_k):
        counts["statements"] += 1

    def on_commit(*_a, **_k):
        counts["commits"] += 1

    event.listen(eng, "before_cursor_execute", on_exec)
    event.listen(eng, "commit", on_commit)
    try:
        seq_wf(5)
        counts.update(statements=0, commits=0)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        seq_wf(n)
        wall = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        event.remove(eng, "before_cursor_execute", on_exec)
        event.remove(eng, "commit", on_commit)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return {
        "n_steps": n,
        "statements_per_step": round(counts["statements"] / n, 2),
        "commits_per_step": round(counts["commits"] / n, 2),
        "wall_us_per_step": round(wall / n * 1e6, 1),
        "cpu_us_per_step": round(cpu / n * 1e6, 1),
    }


# ----------------------------------------------------------------------------


def emit(obj):
    print(json.dumps(obj), flush=True)


def run_backend(kind, args, run_idx):
    global QUEUE
    be = Backend(kind, args.pg_url)
    url = be.url()
    common = {"backend": kind, "run": run_idx}
    try:
        t = time.perf_counter()
        launch(url)
        emit({"bench": "launch", **common, "seconds": round(time.perf_counter() - t, 3)})
        # DBOS 3.x persists queue config in the system DB: register after launch.
        QUEUE = DBOS.register_queue("bench_queue", polling_interval_sec=args.queue_poll)
        emit({"bench": "seq", **common, **bench_seq(args.n)})
        if args.diag:
            emit({"bench": "diag", **common, **bench_diag()})
        emit({"bench": "tput_start", **common, **bench_tput_start(args.w)})
        if not args.skip_queue:
            emit(
                {
                    "bench": "tput_queue",
                    **common,
                    "queue_poll_s": args.queue_poll,
                    "result_poll_s": args.result_poll,
                    **bench_tput_queue(args.w, args.result_poll),
                }
            )
        emit({"bench": "lat_start", **common, **bench_lat_start(args.lat_runs)})
        emit({"bench": "lat_direct", **common, **bench_lat_direct(args.lat_runs)})
        if not args.skip_queue:
            emit(
                {
                    "bench": "lat_queue",
                    **common,
                    "queue_poll_s": args.queue_poll,
                    "result_poll_s": args.result_poll,
                    **bench_lat_queue(args.queue_lat_runs, args.result_poll),
                }
            )
    finally:
        try:
            shutdown()
        finally:
            be.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite")
    ap.add_argument(
        "--pg-url",
        default=os.environ.get(
            "DBOS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--n", type=int, default=1000, help="steps in the sequential workflow")
    ap.add_argument("--w", type=int, default=500, help="concurrent workflows (3 steps each)")
    ap.add_argument("--lat-runs", type=int, default=200)
    ap.add_argument("--queue-lat-runs", type=int, default=50)
    ap.add_argument(
        "--queue-poll",
        type=float,
        default=0.05,
        help="Queue polling_interval_sec (DBOS default is 1.0)",
    )
    ap.add_argument(
        "--result-poll",
        type=float,
        default=0.01,
        help="polling interval for queue handles' get_result (DBOS default 1.0)",
    )
    ap.add_argument("--skip-queue", action="store_true")
    ap.add_argument(
        "--diag",
        action="store_true",
        help="also count SQL statements/commits and CPU time per step",
    )
    args = ap.parse_args()

    logging.getLogger("dbos").setLevel(logging.WARNING)

    import sqlite3

    import dbos as _d

    try:
        from importlib.metadata import version

        dbos_ver = version("dbos")
    except Exception:  # pragma: no cover
        dbos_ver = getattr(_d, "__version__", "?")
    emit(
        {
            "bench": "env",
            "dbos": dbos_ver,
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "nproc": os.cpu_count(),
            "platform": platform.platform(),
            "n": args.n,
            "w": args.w,
            "lat_runs": args.lat_runs,
        }
    )

    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for r in range(args.runs):
        for kind in backends:
            run_backend(kind, args, r)


if __name__ == "__main__":
    main()
