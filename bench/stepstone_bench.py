"""Stepstone's side of the benchmark: the same workloads as the DBOS harness, one process.

Run by ``bench/run.py`` in a fresh subprocess per backend and run (so every figure starts on a
fresh database in a clean process); prints one JSON object per line, in the DBOS harness's
shape (``{"bench": "seq", ...}``)::

    python -m bench.stepstone_bench --url 'sqlite:///tmp/x.db?synchronous=FULL'
    python -m bench.stepstone_bench --mode memory --count 10000
    python -m bench.stepstone_bench --mode list --count 1000000

Completion is observed in-process: the storage's ``release_instance`` is wrapped so the call
that durably records an instance's end resolves a future (what DBOS's in-process
``handle.get_result()`` gives its caller). ``InstanceHandle.wait()`` polls with a growing
back-off instead; ``lat_handle_wait`` measures that public path too.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import platform
import re
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from bench import workflows
from bench.peer_common import emit, lat_stats
from stepstone import Engine, WorkerSettings, __version__
from stepstone.storage import open_storage
from stepstone.storage.base import InstanceQuery, NewInstance

TERMINAL = ("complete", "errored", "terminated")


# --- fresh databases --------------------------------------------------------------------------


@asynccontextmanager
async def fresh_database(kind: str, pg_url: str) -> Any:
    """Yield a Stepstone URL naming a new, empty database; remove it afterwards."""
    if kind.startswith("sqlite"):
        sync = "NORMAL" if kind == "sqlite_normal" else "FULL"
        tmp = tempfile.mkdtemp(prefix="stepstone_bench_")
        try:
            yield f"sqlite:///{tmp}/stepstone.db?synchronous={sync}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    if kind == "memory":
        yield "memory://"
        return
    import asyncpg  # a Stepstone dependency already

    name = "stepstone_bench_" + uuid.uuid4().hex[:10]
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = pg_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(pg_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# --- completion without polling ---------------------------------------------------------------


class Completions:
    """Futures resolved when the worker durably records an instance's end."""

    def __init__(self, engine: Engine) -> None:
        self.futures: dict[str, asyncio.Future[str]] = {}
        storage = engine.storage
        original = storage.release_instance

        async def release_instance(claim: Any, release: Any, now: int) -> str:
            status = await original(claim, release, now)
            if status in TERMINAL:
                future = self.futures.pop(claim.instance.id, None)
                if future is not None and not future.done():
                    future.set_result(status)
            return status

        storage.release_instance = release_instance  # type: ignore[method-assign]

    def expect(self, instance_id: str) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.futures[instance_id] = future
        return future


_ids = iter(range(1, 1 << 62))


def new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


async def run_to_end(engine: Engine, done: Completions, name: str, params: Any) -> str:
    instance_id = new_id(name)
    future = done.expect(instance_id)
    await engine.workflow(name).create(id=instance_id, params=params)
    status = await future
    if status != "complete":
        raise RuntimeError(f"{name} {instance_id} ended {status}")
    return instance_id


# --- the workloads (same shapes as dbos_bench.py) ---------------------------------------------


async def bench_seq(engine: Engine, done: Completions, n: int, reps_empty: int = 20) -> Any:
    await run_to_end(engine, done, "seq", {"n": 10})  # warm-up
    empties = []
    for _ in range(reps_empty):
        t = time.perf_counter()
        await run_to_end(engine, done, "seq", {"n": 0})
        empties.append(time.perf_counter() - t)
    empty_s = statistics.median(empties)
    t = time.perf_counter()
    await run_to_end(engine, done, "seq", {"n": n})
    dt = time.perf_counter() - t
    return {
        "n_steps": n,
        "seconds": round(dt, 4),
        "steps_per_s": round(n / dt, 1),
        "us_per_step": round(dt / n * 1e6, 1),
        "us_per_step_marginal": round((dt - empty_s) / n * 1e6, 1),
        "empty_wf_ms": round(empty_s * 1e3, 3),
    }


async def bench_tput(engine: Engine, done: Completions, w: int) -> Any:
    await run_to_end(engine, done, "three", {"k": -1})  # warm-up
    binding = engine.workflow("three")
    ids = [new_id("three") for _ in range(w)]
    futures = [done.expect(i) for i in ids]
    t = time.perf_counter()
    await asyncio.gather(
        *(binding.create(id=i, params={"k": k}) for k, i in enumerate(ids)),
    )
    started = time.perf_counter() - t
    statuses = await asyncio.gather(*futures)
    dt = time.perf_counter() - t
    assert all(s == "complete" for s in statuses), set(statuses)
    return {
        "workflows": w,
        "steps_per_wf": 3,
        "seconds": round(dt, 4),
        "wf_per_s": round(w / dt, 1),
        "steps_per_s": round(3 * w / dt, 1),
        "start_phase_s": round(started, 4),
    }


async def bench_lat(engine: Engine, done: Completions, runs: int) -> Any:
    for k in range(5):  # warm-up
        await run_to_end(engine, done, "one", {"k": k})
    samples = []
    for k in range(runs):
        t = time.perf_counter()
        await run_to_end(engine, done, "one", {"k": k})
        samples.append(time.perf_counter() - t)
    return {"runs": runs, **lat_stats(samples)}


async def bench_lat_handle_wait(engine: Engine, runs: int) -> Any:
    """The public path: ``create()`` then ``InstanceHandle.wait()`` (polls, 5 ms doubling)."""
    binding = engine.workflow("one")
    samples = []
    for k in range(runs):
        t = time.perf_counter()
        handle = await binding.create(params={"k": k})
        status = await handle.wait()
        samples.append(time.perf_counter() - t)
        assert status["status"] == "complete", status
    return {"runs": runs, **lat_stats(samples)}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def bench_diag(engine: Engine, done: Completions, n: int = 200) -> Any:
    """SQL statements, commits and reads per step on one n-step workflow, and wall and CPU per
    step on another run alike, untraced (the first of each is timed)."""
    storage: Any = engine.storage
    conn = getattr(storage, "_write_conn", None)
    if conn is None or not hasattr(storage, "_read"):
        return {"skipped": "not the SQLite store"}
    counts = {"statements": 0, "commits": 0, "reads": 0, "write_jobs": 0}
    last = [""]

    def trace(sql: str) -> None:
        # Python's sqlite3 reports each trigger program a statement runs as that statement's
        # text again: a line the same as the one before is the same statement.
        if sql == last[0]:
            return
        last[0] = sql
        counts["statements"] += 1
        if sql == "COMMIT":
            counts["commits"] += 1
        elif sql == "RELEASE job":
            counts["write_jobs"] += 1

    original_read = storage._read

    def read(fn: Callable[[sqlite3.Connection], Any]) -> Any:
        counts["reads"] += 1
        return original_read(fn)

    await run_to_end(engine, done, "seq", {"n": 5})
    # Timed untraced: the trace callback expands every statement's SQL, data included.
    c0, t = _cpu(), time.perf_counter()
    await run_to_end(engine, done, "seq", {"n": n})
    wall, cpu = time.perf_counter() - t, _cpu() - c0
    conn.set_trace_callback(trace)
    storage._read = read
    try:
        counts.update(statements=0, commits=0, reads=0, write_jobs=0)
        await run_to_end(engine, done, "seq", {"n": n})
    finally:
        conn.set_trace_callback(None)
        del storage._read
    return {
        "n_steps": n,
        "statements_per_step": round(counts["statements"] / n, 2),
        "commits_per_step": round(counts["commits"] / n, 2),
        "write_jobs_per_step": round(counts["write_jobs"] / n, 2),
        "reads_per_step": round(counts["reads"] / n, 2),
        "wall_us_per_step": round(wall / n * 1e6, 1),
        "cpu_us_per_step": round(cpu / n * 1e6, 1),
    }


async def register_all(engine: Engine) -> None:
    await engine.register("seq", workflows.Seq)
    await engine.register("three", workflows.ThreeSteps)
    await engine.register("one", workflows.OneStep)
    await engine.register("sleeper", workflows.Sleeper)


async def mode_workloads(args: argparse.Namespace) -> None:
    common = {"backend": args.backend, "run": args.run}
    async with fresh_database(args.backend, args.pg_url) as url:
        t = time.perf_counter()
        engine = await Engine.open(url, worker_settings=settings(args))
        try:
            await register_all(engine)
            emit({"bench": "launch", **common, "seconds": round(time.perf_counter() - t, 3)})
            done = Completions(engine)
            emit({"bench": "seq", **common, **await bench_seq(engine, done, args.n)})
            if args.diag:
                emit({"bench": "diag", **common, **await bench_diag(engine, done)})
            emit({"bench": "tput_start", **common, **await bench_tput(engine, done, args.w)})
            emit({"bench": "lat_start", **common, **await bench_lat(engine, done, args.lat_runs)})
            if args.handle_wait_runs:
                emit(
                    {
                        "bench": "lat_handle_wait",
                        **common,
                        **await bench_lat_handle_wait(engine, args.handle_wait_runs),
                    }
                )
        finally:
            await engine.close()


def settings(args: argparse.Namespace) -> WorkerSettings:
    return WorkerSettings(concurrency=args.concurrency, poll_ms=args.poll_ms)


# --- Stepstone alone: memory with sleeping instances ------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _trim() -> None:
    gc.collect()
    with suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def mode_memory(args: argparse.Namespace) -> None:
    """RSS of this process (engine + worker) once ``count`` instances all sleep an hour."""
    async with fresh_database(args.backend, args.pg_url) as url:
        engine = await Engine.open(url, worker_settings=settings(args))
        try:
            await register_all(engine)
            binding = engine.workflow("sleeper")
            await binding.create_batch([{"params": None}])
            await wait_for(lambda: waiting_count(engine), 1, 60)
            baseline_kb = _status_kb("VmRSS")
            t = time.perf_counter()
            total = args.count - 1
            batches = [min(100, total - i) for i in range(0, total, 100)]
            for group in chunks(batches, 10):
                await asyncio.gather(
                    *(binding.create_batch([{"params": None}] * size) for size in group)
                )
            created_s = time.perf_counter() - t
            await wait_for(lambda: waiting_count(engine), args.count, 1800)
            settled_s = time.perf_counter() - t
            await asyncio.sleep(1.0)
            rss_kb = _status_kb("VmRSS")
            hwm_kb = _status_kb("VmHWM")
            _trim()
            await asyncio.sleep(0.2)
            trimmed_kb = _status_kb("VmRSS")
            # What is left once SQLite's page caches (bounded by cache_size per connection)
            # are let go: the engine's own state for the sleeping instances.
            _shrink_sqlite_caches(engine.storage)
            _trim()
            shrunk_kb = _status_kb("VmRSS")
            emit(
                {
                    "bench": "memory",
                    "backend": args.backend,
                    "instances": args.count,
                    "baseline_rss_mb": round(baseline_kb / 1024, 1),
                    "rss_mb": round(rss_kb / 1024, 1),
                    "rss_after_gc_trim_mb": round(trimmed_kb / 1024, 1),
                    "rss_without_page_cache_mb": round(shrunk_kb / 1024, 1),
                    "peak_rss_mb": round(hwm_kb / 1024, 1),
                    "create_s": round(created_s, 2),
                    "all_waiting_s": round(settled_s, 2),
                    "active_activations": engine.worker.active_count if engine.worker else None,
                }
            )
        finally:
            await engine.close()


def _shrink_sqlite_caches(storage: Any) -> None:
    local = getattr(storage, "_local", None)
    for conn in (getattr(storage, "_write_conn", None), getattr(local, "conn", None)):
        if conn is not None:
            conn.execute("PRAGMA shrink_memory")


async def waiting_count(engine: Engine) -> int:
    workflow = await engine.storage.get_workflow(engine.project.account_id, "sleeper")
    assert workflow is not None
    counts = await engine.storage.count_instances(workflow.pk)
    return counts.get("waiting", 0)


async def wait_for(probe: Callable[[], Awaitable[int]], target: int, timeout_s: float) -> None:
    """Poll ``probe`` (a COUNT query) every 250 ms until it reaches ``target``."""
    async with asyncio.timeout(timeout_s):
        while await probe() < target:
            await asyncio.sleep(0.25)


def chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- Stepstone alone: one page of the list with many instances stored --------------------------


async def mode_list(args: argparse.Namespace) -> None:
    count, batch, base = args.count, 10_000, 1_700_000_000_000
    async with fresh_database(args.backend, args.pg_url) as url:
        engine = await Engine.open(url, run_worker=False)
        try:
            await register_all(engine)
            workflow = await engine.storage.get_workflow(engine.project.account_id, "one")
            assert workflow is not None
            params = b'{"k":0}'
            t = time.perf_counter()
            for start in range(0, count, batch):
                items = [
                    NewInstance(id=f"i{i:08d}", params=params)
                    for i in range(start, min(count, start + batch))
                ]
                await engine.storage.create_instances(
                    workflow.pk,
                    workflow.version.id,
                    items,
                    base + start // batch,
                    skip_existing=False,
                )
            insert_s = time.perf_counter() - t

            def cursor_at(depth: int) -> tuple[int, str]:
                index = count - 1 - depth  # newest first: depth 0 is the last inserted
                return (base + index // batch, f"i{index:08d}")

            depth = int(count * 0.9)
            queries = {
                "first_page": InstanceQuery(limit=args.page_size),
                "keyset_deep": InstanceQuery(after=cursor_at(depth), limit=args.page_size),
                "status_first_page": InstanceQuery(status="queued", limit=args.page_size),
                "status_keyset_deep": InstanceQuery(
                    status="queued", after=cursor_at(depth), limit=args.page_size
                ),
            }
            result: dict[str, Any] = {
                "bench": "list",
                "backend": args.backend,
                "instances": count,
                "page_size": args.page_size,
                "deep_position": depth,
                "insert_s": round(insert_s, 1),
                "insert_per_s": round(count / insert_s),
            }
            for name, query in queries.items():
                samples = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    page = await engine.storage.list_instances(workflow.pk, query)
                    samples.append(time.perf_counter() - t)
                    assert len(page) == args.page_size, (name, len(page))
                s = lat_stats(samples)
                result[name] = {"p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"]}
            # The deprecated page-number listing at the same depth, once, for contrast.
            t = time.perf_counter()
            await engine.storage.list_instances(
                workflow.pk, InstanceQuery(offset=depth, limit=args.page_size)
            )
            result["offset_deep_once_ms"] = round((time.perf_counter() - t) * 1e3, 2)
            emit(result)
        finally:
            await engine.close()


# --- Stepstone alone: over HTTP ---------------------------------------------------------------


SERVER_CODE = (
    "import sys\n"
    "from stepstone.server import run_server\n"
    "run_server(config=None, db=sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]),"
    " data_dir=sys.argv[3])\n"
)
# wrk prints latencies as 812.00us, 6.80ms or 1.02s.
WRK_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux), to report CPU per request: on a shared
    machine that varies far less than req/s does."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk_ms(text: str) -> float:
    number = text.rstrip("usm")
    return round(float(number) * WRK_UNITS_MS[text[len(number) :]], 3)


def parse_wrk(output: str) -> dict[str, Any]:
    """req/s, the request and error counts and the latency percentiles of ``wrk --latency``."""

    def count(pattern: str) -> int:
        found = re.search(pattern, output)
        return int(found.group(1)) if found else 0

    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", output, re.MULTILINE))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "requests": count(r"(\d+) requests in"),
        "errors": count(r"Non-2xx or 3xx responses: (\d+)")
        + (sum(int(g) for g in socket_errors.groups()) if socket_errors else 0),
        "req_per_s": float(re.findall(r"Requests/sec:\s+([\d.]+)", output)[0]),
        **{f"p{p}_ms": _wrk_ms(latency[p]) for p in ("50", "90", "99")},
    }


def _load_wrk(wrk: str, url: str, headers: dict[str, str], clients: int, seconds: float) -> Any:
    import subprocess

    # One thread: the server has the other core of a two-core machine to itself.
    cmd = [wrk, "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    done = subprocess.run([*cmd, url], capture_output=True, text=True, check=True)
    return {"generator": "wrk -t1", **parse_wrk(done.stdout)}


async def _load_httpx(
    url: str, headers: dict[str, str], clients: int, seconds: float
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits, headers=headers) as http:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                answer = await http.get(url)
                latencies.append(time.perf_counter() - t)
                if answer.status_code != 200:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    stats = lat_stats(latencies)
    return {
        "generator": "httpx",
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": stats["p50_ms"],
        "p90_ms": stats["p90_ms"],
        "p99_ms": stats["p99_ms"],
    }


async def mode_http(args: argparse.Namespace) -> None:
    """Create-to-complete over HTTP, and the step endpoint under a loopback load generator.

    The server is ``stepstone.server.run_server`` in its own process (API + worker), with its
    defaults: an admin token (read from its data directory) authenticates every request. The
    client polls the instance every millisecond; the load generator (``wrk`` when installed,
    else httpx in this process, which needs as much CPU as the server) runs ``--http-clients``
    keep-alive connections for ``--http-seconds`` against ``GET .../step``.
    """
    import subprocess

    import httpx

    port = _free_port()
    async with fresh_database(args.backend, args.pg_url) as url:
        data_dir = tempfile.mkdtemp(prefix="stepstone_bench_http_")
        server = subprocess.Popen(  # noqa: ASYNC220 - started once, before timing
            [sys.executable, "-c", SERVER_CODE, url, str(port), data_dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        wf = f"{base}/client/v4/accounts/default/workflows/one"
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                async with asyncio.timeout(60):
                    while True:
                        try:
                            if (await http.get(f"{base}/healthz")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await asyncio.sleep(0.1)
                token = (Path(data_dir) / "admin-token").read_text().strip()
                http.headers["authorization"] = f"Bearer {token}"
                put = await http.put(
                    wf, json={"class_name": "OneStep", "script_name": "bench.workflows"}
                )
                put.raise_for_status()

                async def create_and_wait(k: int) -> str:
                    instance_id = new_id("h")
                    made = await http.post(
                        f"{wf}/instances", json={"instance_id": instance_id, "params": {"k": k}}
                    )
                    made.raise_for_status()
                    while True:
                        got = await http.get(
                            f"{wf}/instances/{instance_id}", params={"simple": "true"}
                        )
                        body = got.json()
                        if not body.get("success") or body.get("result") is None:
                            raise RuntimeError(f"GET instance: {got.status_code} {got.text[:300]}")
                        status = body["result"]["status"]
                        if status in TERMINAL:
                            assert status == "complete", status
                            return instance_id
                        await asyncio.sleep(0.001)

                for k in range(5):
                    last = await create_and_wait(k)
                samples = []
                for k in range(args.lat_runs):
                    t = time.perf_counter()
                    last = await create_and_wait(k)
                    samples.append(time.perf_counter() - t)
                lat = lat_stats(samples)
                step_url = f"{wf}/instances/{last}/step?name=s0-1&type=step"
                (await http.get(step_url)).raise_for_status()
            headers = {"authorization": f"Bearer {token}"}
            wrk = shutil.which("wrk")
            cpu_before = _cpu_seconds(server.pid)
            t0 = time.perf_counter()
            if wrk is not None:
                load = await asyncio.to_thread(
                    _load_wrk, wrk, step_url, headers, args.http_clients, args.http_seconds
                )
            else:
                load = await _load_httpx(step_url, headers, args.http_clients, args.http_seconds)
            elapsed = time.perf_counter() - t0
            cpu_after = _cpu_seconds(server.pid)
            if cpu_before is not None and cpu_after is not None and load["requests"]:
                cpu_us = (cpu_after - cpu_before) / load["requests"] * 1e6
                load["server_cpu_us_per_req"] = round(cpu_us)
            emit(
                {
                    "bench": "http",
                    "backend": args.backend,
                    "auth": "token",
                    "create_to_complete": {"runs": args.lat_runs, **lat},
                    "step_endpoint": {
                        "clients": args.http_clients,
                        "seconds": round(elapsed, 2),
                        **load,
                    },
                    "note": f"load generator ({load['generator']}) and server share the machine",
                }
            )
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
            shutil.rmtree(data_dir, ignore_errors=True)


# --- does a backend work here? ----------------------------------------------------------------


async def mode_probe(args: argparse.Namespace) -> None:
    """Report whether ``open_storage`` can open the backend (a fresh database)."""
    try:
        async with fresh_database(args.backend, args.pg_url) as url:
            storage = open_storage(url)
            await storage.open()
            await storage.close()
    except BaseException as exc:  # report anything: this is a probe
        emit({"bench": "probe", "backend": args.backend, "ok": False, "reason": repr(exc)[:300]})
        return
    emit({"bench": "probe", "backend": args.backend, "ok": True})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--mode", choices=["workloads", "memory", "list", "probe", "http"], default="workloads"
    )
    ap.add_argument(
        "--backend",
        choices=["sqlite_full", "sqlite_normal", "postgres", "memory"],
        default="sqlite_full",
    )
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--run", type=int, default=0)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--w", type=int, default=500)
    ap.add_argument("--lat-runs", type=int, default=200)
    ap.add_argument("--handle-wait-runs", type=int, default=0)
    ap.add_argument("--diag", action="store_true")
    ap.add_argument("--concurrency", type=int, default=WorkerSettings().concurrency)
    ap.add_argument("--poll-ms", type=int, default=WorkerSettings().poll_ms)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--page-size", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument(
        "--switch-interval",
        type=float,
        help="sys.setswitchinterval (s) for an experiment; Python's default is 0.005",
    )
    ap.add_argument("--http-clients", type=int, default=16)
    ap.add_argument("--http-seconds", type=float, default=5.0)
    args = ap.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    if args.mode == "workloads":
        emit(
            {
                "bench": "env",
                "stepstone": __version__,
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
                "nproc": os.cpu_count(),
                "worker": {"concurrency": args.concurrency, "poll_ms": args.poll_ms},
            }
        )
    modes = {
        "workloads": mode_workloads,
        "memory": mode_memory,
        "list": mode_list,
        "probe": mode_probe,
        "http": mode_http,
    }
    asyncio.run(modes[args.mode](args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
