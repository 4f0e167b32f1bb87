"""Absurd (absurd-sdk and absurdctl from PyPI) on W1, W2 and W3, on PostgreSQL.

Run from Absurd's own venv, never Stepstone's (``bench/peer.py`` builds it)::

    ~/.cache/stepstone-bench/venv-absurd/bin/python -m bench.absurd_peer --pg-url URL

One run is a new, uniquely named database on the server at ``--pg-url``, the schema installed
with ``absurdctl init``, one queue, then in this process the SDK's own async worker
(``AsyncAbsurd.start_worker``, its own connection) and a client (another ``AsyncAbsurd``, its
own connection) that spawns tasks. Completion is observed in-process when the worker's
complete call has returned (committed), the observation Stepstone's harness makes; the
database is dropped at the end.

Absurd has no LISTEN/NOTIFY: its worker polls, every 0.25 s by default, which alone would make
W3's p50 about 268 ms; the runs poll every 1 ms (``--poll``) so the workloads measure the
engine, not that default.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata as md
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import absurd_sdk  # type: ignore[import-not-found]
import psycopg  # type: ignore[import-not-found]
from absurd_sdk import AsyncAbsurd

from bench import peer_common as common

QUEUE = "bench"

# Completion without polling: the SDK's "complete this run" call is wrapped so that when it
# returns (the completion is committed) the waiting future resolves.
_futures: dict[str, asyncio.Future[Any]] = {}
_original_complete = absurd_sdk._complete_task_run_async


async def _complete_and_signal(conn: Any, queue_name: str, run_id: Any, result: Any) -> None:
    await _original_complete(conn, queue_name, run_id, result)
    future = _futures.pop(str(run_id), None)
    if future is not None and not future.done():
        future.set_result(result)


absurd_sdk._complete_task_run_async = _complete_and_signal


async def noop(i: int) -> dict[str, Any]:
    return {"i": i, "ok": True}


def register(app: Any) -> None:
    @app.register_task(name="seq")  # type: ignore[untyped-decorator]
    async def seq(params: Any, ctx: Any) -> int:
        n = int(params["n"])
        for i in range(n):
            await ctx.step(f"s{i}", lambda i=i: noop(i))
        return n

    @app.register_task(name="three")  # type: ignore[untyped-decorator]
    async def three(params: Any, ctx: Any) -> int:
        for i in range(3):
            await ctx.step(f"s{i}", lambda i=i: noop(i))
        return int(params["k"])

    @app.register_task(name="one")  # type: ignore[untyped-decorator]
    async def one(params: Any, ctx: Any) -> int:
        k = int(params["k"])
        await ctx.step("s0", lambda: noop(k))
        return k


def expect(run_id: Any) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    _futures[str(run_id)] = future
    return future


async def run_to_end(client: Any, name: str, params: Any) -> Any:
    spawned = await client.spawn(name, params, max_attempts=1)
    return await expect(spawned["run_id"])


async def bench_seq(client: Any, n: int) -> dict[str, Any]:
    await run_to_end(client, "seq", {"n": 10})
    empties = []
    for _ in range(common.EMPTY_REPS):
        t = time.perf_counter()
        await run_to_end(client, "seq", {"n": 0})
        empties.append(time.perf_counter() - t)
    c0 = common.self_cpu()
    t = time.perf_counter()
    got = await run_to_end(client, "seq", {"n": n})
    dt = time.perf_counter() - t
    assert got == n, got
    return {
        **common.seq_result(n, dt, common.median_s(empties)),
        "client_and_worker_cpu_s": round(common.self_cpu() - c0, 3),
    }


async def bench_tput(client: Any, w: int) -> dict[str, Any]:
    await run_to_end(client, "three", {"k": -1})
    c0 = common.self_cpu()
    t = time.perf_counter()
    futures = []
    # The client spawns in sequence on its one connection (AsyncAbsurd serialises the calls on
    # its connection anyway); each future is registered before the worker can complete it.
    for k in range(w):
        spawned = await client.spawn("three", {"k": k}, max_attempts=1)
        futures.append(expect(spawned["run_id"]))
    started = time.perf_counter() - t
    results = await asyncio.gather(*futures)
    dt = time.perf_counter() - t
    assert sorted(results) == list(range(w))
    return {
        **common.tput_result(w, dt, started),
        "client_and_worker_cpu_s": round(common.self_cpu() - c0, 3),
    }


async def bench_lat(client: Any, runs: int) -> dict[str, Any]:
    for k in range(common.WARMUP):
        await run_to_end(client, "one", {"k": k})
    samples = []
    for k in range(runs):
        t = time.perf_counter()
        got = await run_to_end(client, "one", {"k": k})
        samples.append(time.perf_counter() - t)
        assert got == k, got
    return {"runs": runs, **common.lat_stats(samples)}


def fresh_db(pg_url: str) -> tuple[str, str]:
    name = "stepstone_bench_absurd_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = pg_url.rpartition("/")
    return name, f"{base}/{name}"


def drop_db(pg_url: str, name: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main_async(args: argparse.Namespace) -> None:
    fields = {"system": "absurd", "config": args.config_name, "run": args.run}
    name, url = fresh_db(args.pg_url)
    try:
        t = time.perf_counter()
        absurdctl = Path(sys.executable).with_name("absurdctl")
        init = [str(absurdctl), "init", "-d", url]
        await asyncio.to_thread(subprocess.run, init, check=True, capture_output=True)
        client = AsyncAbsurd(url, queue_name=QUEUE)
        await client.create_queue(QUEUE)
        workers = []
        for _ in range(args.workers):
            app = AsyncAbsurd(url, queue_name=QUEUE)
            register(app)
            workers.append(app)
        register(client)  # spawn() needs the task registered (or an explicit queue)
        per_worker = max(1, args.concurrency // args.workers)
        loops = [
            asyncio.create_task(
                app.start_worker(worker_id=f"w{i}", concurrency=per_worker, poll_interval=args.poll)
            )
            for i, app in enumerate(workers)
        ]
        common.emit({"bench": "launch", **fields, "seconds": round(time.perf_counter() - t, 3)})
        try:
            if "seq" in args.only:
                common.emit({"bench": "seq", **fields, **await bench_seq(client, args.n)})
            if "tput" in args.only:
                common.emit({"bench": "tput_start", **fields, **await bench_tput(client, args.w)})
            if "lat" in args.only:
                row = await bench_lat(client, args.lat_runs)
                common.emit({"bench": "lat_start", **fields, **row})
        finally:
            for app in workers:
                app.stop_worker()
            await asyncio.wait(loops, timeout=5)
            for app in workers:
                await app.close()
            await client.close()
    finally:
        drop_db(args.pg_url, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--run", type=int, default=0)
    ap.add_argument("--n", type=int, default=common.N_STEPS)
    ap.add_argument("--w", type=int, default=common.W_WORKFLOWS)
    ap.add_argument("--lat-runs", type=int, default=common.LAT_RUNS)
    ap.add_argument("--workers", type=int, default=1, help="worker clients, one connection each")
    ap.add_argument("--concurrency", type=int, default=100, help="tasks at once, all workers")
    ap.add_argument("--poll", type=float, default=0.001, help="idle poll (SDK default 0.25 s)")
    ap.add_argument("--only", default="seq,tput,lat")
    args = ap.parse_args()
    args.config_name = f"workers={args.workers},poll={args.poll}"
    with psycopg.connect(args.pg_url) as c:
        server = c.execute("SHOW server_version").fetchone()[0]
        sync = c.execute("SHOW synchronous_commit").fetchone()[0]
    common.emit(
        {
            "bench": "env",
            "system": "absurd",
            "absurd_sdk": md.version("absurd-sdk"),
            "absurdctl": md.version("absurdctl"),
            "postgres": server,
            "synchronous_commit": sync,
            "python": sys.version.split()[0],
        }
    )
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
