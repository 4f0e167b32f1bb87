"""What a read costs as the history grows: GET status (``simple=true``), GET step and the full
GET instance, at 1, 1,000 and 10,000 recorded steps, over real HTTP.

    .venv/bin/python -m bench.reads --backend sqlite
    .venv/bin/python -m bench.reads --backend postgres --tree /tmp/other-checkout

The server is ``stepstone.server.run_server`` (what ``stepstone serve`` runs: API and worker in
one process, an API token on every request) in its own process, on a database filled first by
a separate process that runs ``bench.workflows.Seq`` to completion with n = 1, 1,000 and
10,000 steps (on PostgreSQL, then ``VACUUM ANALYZE``: the steady state, not an autovacuum set
off by the fill). ``--tree`` runs both with another checkout's ``stepstone`` (a ``git worktree``
of an older commit, for a before/after table). The client is one keep-alive connection
(``http.client``), one request at a time: each figure is the median wall time of a request
and the server's CPU per request (``/proc/<pid>/stat``) over the same requests. SQLite runs
with ``synchronous=NORMAL``: reads never sync, and it keeps filling 11,001 steps short.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stepstone_bench import fresh_database

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1, 1_000, 10_000)
BUDGET_S = 8.0
MIN_REPS = 5
WF = "/client/v4/accounts/default/workflows/seq/instances"
FILL_CODE = """
import asyncio, sys
import stepstone
print("stepstone from", stepstone.__file__, file=sys.stderr)
from stepstone import Engine
from bench.workflows import Seq

async def main():
    engine = await Engine.open(sys.argv[1], config=None)
    try:
        await engine.register("seq", Seq, limits_steps=20_000)
        binding = engine.workflow("seq")
        for n in map(int, sys.argv[2].split(",")):
            handle = await binding.create(id=f"n{n}", params={"n": n})
            while (await handle.status())["status"] not in ("complete", "errored"):
                await asyncio.sleep(0.05)
            assert (await handle.status())["status"] == "complete", n
    finally:
        await engine.close()
    if sys.argv[1].startswith("postgresql"):
        # Measure the steady state, not an autovacuum that the fill sets off mid-measurement.
        import asyncpg
        conn = await asyncpg.connect(sys.argv[1])
        await conn.execute("VACUUM ANALYZE")
        await conn.close()

asyncio.run(main())
"""
SERVE_CODE = """
import sys
from stepstone.server import run_server
run_server(config=None, db=sys.argv[1], host="127.0.0.1", port=int(sys.argv[2]),
           data_dir=sys.argv[3], access_log=False)
"""


def _env(tree: Path | None) -> dict[str, str]:
    """The children run in ``tree`` (``python -c`` puts the working directory first), and
    find ``bench.workflows`` in this checkout if the tree has none."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*([str(tree)] if tree else []), str(ROOT)])
    return env


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client:
    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"authorization": f"Bearer {token}"}

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path, headers=self.headers)
        answer = self.conn.getresponse()
        return answer.status, answer.read()


def _measure(client: Client, pid: int, path: str, reps: int, warmup: int) -> dict[str, Any]:
    """Up to ``reps`` requests, or as many as fit in ``BUDGET_S`` (at least ``MIN_REPS``): a
    read that folds 10,000 steps takes a second each."""
    started = time.perf_counter()
    for _ in range(warmup):
        status, body = client.get(path)
        assert status == 200, body[:300]
        if time.perf_counter() - started > BUDGET_S / 4:
            break
    samples: list[float] = []
    cpu0 = _cpu_s(pid)
    started = time.perf_counter()
    while len(samples) < reps:
        t = time.perf_counter()
        client.get(path)
        samples.append(time.perf_counter() - t)
        if len(samples) >= MIN_REPS and t - started > BUDGET_S:
            break
    cpu = _cpu_s(pid) - cpu0
    return {
        "reps": len(samples),
        "median_us": round(statistics.median(samples) * 1e6, 1),
        "p95_us": round(sorted(samples)[int(len(samples) * 0.95)] * 1e6, 1),
        "server_cpu_us": round(cpu / len(samples) * 1e6, 1),
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(args: argparse.Namespace, tree: Path | None) -> list[dict[str, Any]]:
    kind = "sqlite_normal" if args.backend == "sqlite" else "postgres"
    async with fresh_database(kind, args.pg_url) as url:
        return await asyncio.to_thread(_bench, args, _env(tree), url, tree or ROOT)


def _bench(
    args: argparse.Namespace, env: dict[str, str], url: str, cwd: Path
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", FILL_CODE, url, ",".join(map(str, SIZES))],
        env=env,
        cwd=cwd,
        check=True,
    )
    print(f"filled in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    data_dir = tempfile.mkdtemp(prefix="stepstone_bench_reads_")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE_CODE, url, str(port), data_dir],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        token_file = Path(data_dir) / "admin-token"
        deadline = time.monotonic() + 60
        while not token_file.exists() or _health(port) != 200:
            assert server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        client = Client(port, token_file.read_text().strip())
        for n in SIZES:
            middle = f"s{n // 2}-1"
            reads = {
                "status": (f"{WF}/n{n}?simple=true", args.reps),
                "step": (f"{WF}/n{n}/step?name={middle}&type=step", args.reps),
                "full": (f"{WF}/n{n}", args.reps),
            }
            for read, (path, reps) in reads.items():
                row = _measure(client, server.pid, path, reps, args.warmup)
                rows.append({"backend": args.backend, "steps": n, "read": read, **row})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)
    return rows


def _health(port: int) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--tree", help="a checkout whose stepstone serves (default: this one)")
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args()
    rows = asyncio.run(run(args, Path(args.tree).resolve() if args.tree else None))
    ones = {r["read"]: r for r in rows if r["steps"] == 1}
    for r in rows:
        if r["steps"] != 1 and r["read"] in ("status", "step"):
            base = ones[r["read"]]
            print(
                f"{r['backend']} {r['read']} at {r['steps']} steps:"
                f" {r['median_us'] / base['median_us']:.2f}x the 1-step wall time,"
                f" {r['server_cpu_us'] / max(base['server_cpu_us'], 0.1):.2f}x its server CPU",
                file=sys.stderr,
            )


if __name__ == "__main__":
    main()
