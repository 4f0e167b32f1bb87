"""Stepstone over its HTTP API on W1, W2 and W3: the cell compared with Restate's ingress.

    .venv/bin/python -m bench.stepstone_http --backend sqlite_full

The server is ``stepstone.server.run_server`` (what ``stepstone serve`` runs: API and worker in
one process, an API token on every request, the access log off) on a fresh database, in its
own process. The client is ``peer_common.HttpPool``, the one the Restate harness uses. It
creates with POST and observes completion by polling the instance (W3 every 1 ms, as the rest
of the suite does; W1 and W2 every 5 ms, W2 through the list's ``total_count`` of status
``complete``). W2's 500 POSTs go out at once over 100 connections, as Restate's calls do.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import peer_common as common
from bench import stepstone_bench as sb
from stepstone import WorkerSettings, __version__

SERVER_CODE = (
    "import sys\n"
    "from stepstone.server import run_server\n"
    "run_server(config=None, db=sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]),"
    " data_dir=sys.argv[3], access_log=False)\n"
)
WF_PATH = "/client/v4/accounts/default/workflows"
WORKFLOWS = (("seq", "Seq"), ("three", "ThreeSteps"), ("one", "OneStep"))


async def until_healthy(pool: common.HttpPool, server: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(60):
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the API server exited {server.returncode}")
            try:
                status, _ = await pool.request("GET", "/healthz")
                if status == 200:
                    return
            except (OSError, asyncio.IncompleteReadError):
                pass
            await asyncio.sleep(0.1)


class Client:
    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port, self.headers = port, headers
        self.one = common.HttpPool("127.0.0.1", port, 1, headers)

    async def create(self, pool: common.HttpPool, name: str, params: Any) -> str:
        instance_id = sb.new_id(name)
        body = {"instance_id": instance_id, "params": params}
        await pool.json("POST", f"{WF_PATH}/{name}/instances", body)
        return instance_id

    async def wait(self, name: str, instance_id: str, poll: float) -> None:
        path = f"{WF_PATH}/{name}/instances/{instance_id}?simple=true"
        while True:
            status = (await self.one.json("GET", path))["result"]["status"]
            if status in sb.TERMINAL:
                if status != "complete":
                    raise RuntimeError(f"{name} {instance_id} ended {status}")
                return
            await asyncio.sleep(poll)

    async def run_to_end(self, name: str, params: Any, poll: float) -> None:
        await self.wait(name, await self.create(self.one, name, params), poll)


async def bench_seq(c: Client, server_pid: int, n: int, poll: float) -> dict[str, Any]:
    await c.run_to_end("seq", {"n": 10}, 0.005)
    empties = []
    for _ in range(common.EMPTY_REPS):
        t = time.perf_counter()
        await c.run_to_end("seq", {"n": 0}, 0.001)
        empties.append(time.perf_counter() - t)
    c0 = common.cpu_seconds(server_pid) or 0.0
    t = time.perf_counter()
    await c.run_to_end("seq", {"n": n}, poll)
    dt = time.perf_counter() - t
    row = common.seq_result(n, dt, common.median_s(empties))
    row["server_cpu_s"] = round((common.cpu_seconds(server_pid) or 0.0) - c0, 3)
    return row


async def bench_tput(c: Client, server_pid: int, w: int, conns: int) -> dict[str, Any]:
    await c.run_to_end("three", {"k": -1}, 0.005)
    many = common.HttpPool("127.0.0.1", c.port, conns, c.headers)
    c0, cc0 = common.cpu_seconds(server_pid) or 0.0, common.self_cpu()
    t = time.perf_counter()
    await asyncio.gather(*(c.create(many, "three", {"k": k}) for k in range(w)))
    started = time.perf_counter() - t
    path = f"{WF_PATH}/three/instances?status=complete&per_page=1"
    while (await c.one.json("GET", path))["result_info"]["total_count"] < w + 1:
        await asyncio.sleep(0.005)
    dt = time.perf_counter() - t
    client_cpu = common.self_cpu() - cc0
    await many.close()
    row = common.tput_result(w, dt, started)
    row["http_conns"] = conns
    row["client_cpu_s"] = round(client_cpu, 3)
    row["server_cpu_s"] = round((common.cpu_seconds(server_pid) or 0.0) - c0, 3)
    return row


async def bench_lat(c: Client, server_pid: int, runs: int) -> dict[str, Any]:
    for k in range(common.WARMUP):
        await c.run_to_end("one", {"k": k}, 0.001)
    samples = []
    c0 = common.cpu_seconds(server_pid) or 0.0
    for k in range(runs):
        t = time.perf_counter()
        await c.run_to_end("one", {"k": k}, 0.001)
        samples.append(time.perf_counter() - t)
    cpu = (common.cpu_seconds(server_pid) or 0.0) - c0
    return {"runs": runs, **common.lat_stats(samples), "server_cpu_s_per_run": round(cpu / runs, 5)}


async def main_async(args: argparse.Namespace) -> None:
    fields = {"system": "stepstone", "config": f"http_{args.backend}", "run": args.run}
    port = common.free_port()
    async with sb.fresh_database(args.backend, args.pg_url) as url:
        data_dir = tempfile.mkdtemp(prefix="stepstone_bench_http_")
        t0 = time.perf_counter()
        server = subprocess.Popen(  # noqa: ASYNC220 - started once, before timing
            [sys.executable, "-c", SERVER_CODE, url, str(port), data_dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            probe = common.HttpPool("127.0.0.1", port, 1)
            await until_healthy(probe, server)
            await probe.close()
            token = (Path(data_dir) / "admin-token").read_text().strip()
            c = Client(port, {"authorization": f"Bearer {token}"})
            for name, cls in WORKFLOWS:
                body = {"class_name": cls, "script_name": "bench.workflows"}
                await c.one.json("PUT", f"{WF_PATH}/{name}", body)
            common.emit(
                {"bench": "launch", **fields, "seconds": round(time.perf_counter() - t0, 3)}
            )
            if "seq" in args.only:
                row = await bench_seq(c, server.pid, args.n, args.seq_poll)
                common.emit({"bench": "seq", **fields, **row})
            if "tput" in args.only:
                row = await bench_tput(c, server.pid, args.w, args.http_conns)
                common.emit({"bench": "tput_start", **fields, **row})
            if "lat" in args.only:
                row = await bench_lat(c, server.pid, args.lat_runs)
                common.emit({"bench": "lat_start", **fields, **row})
            await c.one.close()
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
            shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="sqlite_full", choices=["sqlite_full", "postgres"])
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--run", type=int, default=0)
    ap.add_argument("--n", type=int, default=common.N_STEPS)
    ap.add_argument("--w", type=int, default=common.W_WORKFLOWS)
    ap.add_argument("--lat-runs", type=int, default=common.LAT_RUNS)
    ap.add_argument("--http-conns", type=int, default=100)
    ap.add_argument("--only", default="seq,tput,lat")
    ap.add_argument("--seq-poll", type=float, default=0.005, help="W1 poll interval (s)")
    args = ap.parse_args()
    settings = WorkerSettings()
    common.emit(
        {
            "bench": "env",
            "system": "stepstone",
            "stepstone": __version__,
            "python": sys.version.split()[0],
            "worker": {"concurrency": settings.concurrency, "poll_ms": settings.poll_ms},
        }
    )
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
