"""Restate (restate-server from npm, restate-sdk from PyPI) on W1, W2 and W3.

Run from Restate's own venv, never Stepstone's (``bench/peer.py`` builds it)::

    ~/.cache/stepstone-bench/venv-restate/bin/python -m bench.restate_peer --server PATH

One run is a fresh restate-server (its defaults, except loopback binding, free ports, a new
data folder deleted afterwards, telemetry and the web UI off, quieter logs), a fresh SDK
service process (``bench.restate_service`` under hypercorn, h2c), the deployment registered
through the admin API, then the workloads through the HTTP ingress with
``peer_common.HttpPool``. An ingress call returns when the invocation has ended, so its
response is the observation of completion. Prints JSON lines like the other harnesses.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata as md
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from bench import peer_common as common

CONFIG = """\
# Restate defaults (see `restate-server --dump-config`), except: loopback only, free ports,
# data under the run's folder, no telemetry, quieter logs.
bind-ip = "127.0.0.1"
bind-port = {fabric}
base-dir = "{base}"
node-name = "stepstone-bench"
disable-telemetry = true
log-filter = "warn"
{extra}
[ingress]
bind-port = {ingress}

[admin]
bind-port = {admin}
disable-web-ui = true
"""


def version(server: Path) -> str:
    out = subprocess.run([str(server), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


class Restate:
    def __init__(self, server: Path, extra_config: str = "") -> None:
        self.base = Path(tempfile.mkdtemp(prefix="stepstone_bench_restate_"))
        self.ingress, self.admin, self.fabric, self.svc = (common.free_port() for _ in range(4))
        cfg = self.base / "restate.toml"
        cfg.write_text(
            CONFIG.format(
                fabric=self.fabric,
                base=self.base / "node",
                ingress=self.ingress,
                admin=self.admin,
                extra=extra_config,
            )
        )
        self.log: IO[bytes] = open(self.base / "server.log", "wb")  # noqa: SIM115
        # STEPSTONE_BENCH_RESTATE_WRAP: a command prefix for the server, such as
        # "strace -f -c -o FILE" for a durability check; never set for timed runs.
        wrap = os.environ.get("STEPSTONE_BENCH_RESTATE_WRAP", "").split()
        self.server = subprocess.Popen(
            [*wrap, str(server), "--no-logo", "-c", str(cfg)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.base,
            start_new_session=True,
            env={**os.environ, "DO_NOT_TRACK": "1"},
        )
        self.service = subprocess.Popen(
            [sys.executable, "-m", "bench.restate_service", str(self.svc)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def tail(self) -> str:
        self.log.flush()
        lines = (self.base / "server.log").read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-5:])

    async def ready(self, timeout: float = 90) -> None:
        async def until(port: int, method: str, path: str, body: Any, ok: tuple[int, ...]) -> None:
            pool = common.HttpPool("127.0.0.1", port, 1)
            try:
                while True:
                    for proc, what in ((self.server, "restate-server"), (self.service, "service")):
                        if proc.poll() is not None:
                            raise RuntimeError(f"{what} exited {proc.returncode}: {self.tail()}")
                    try:
                        status, _ = await pool.request(method, path, body)
                        if status in ok:
                            return
                    except (OSError, asyncio.IncompleteReadError):
                        pass
                    await asyncio.sleep(0.1)
            finally:
                await pool.close()

        async with asyncio.timeout(timeout):
            await until(self.admin, "GET", "/health", None, (200,))
            await until(self.svc, "GET", "/health", None, (200,))
            deployment = {"uri": f"http://127.0.0.1:{self.svc}"}
            await until(self.admin, "POST", "/deployments", deployment, (200, 201))
            await until(self.ingress, "POST", "/bench/one", {"k": -1}, (200,))

    def cpu(self) -> dict[str, float | None]:
        return {
            "server_cpu_s": common.cpu_seconds(self.server.pid),
            "service_cpu_s": common.cpu_seconds(self.service.pid),
            "client_cpu_s": common.self_cpu(),
        }

    def close(self) -> None:
        for proc in (self.service, self.server):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in (self.service, self.server):
            try:
                # Its graceful shutdown can take 30 s or more; nothing is measured now and the
                # data is discarded, so it gets 5 s.
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.log.close()
        if not os.environ.get("STEPSTONE_BENCH_KEEP_DATA"):
            shutil.rmtree(self.base, ignore_errors=True)


def cpu_delta(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, float]:
    out = {}
    for key, start in before.items():
        end = after.get(key)
        if start is not None and end is not None:
            out[key] = round(end - start, 3)
    return out


async def call(pool: common.HttpPool, handler: str, body: dict[str, Any]) -> Any:
    return await pool.json("POST", f"/bench/{handler}", body)


async def bench_seq(r: Restate, n: int) -> dict[str, Any]:
    pool = common.HttpPool("127.0.0.1", r.ingress, 1)
    await call(pool, "seq", {"n": 10})
    empties = []
    for _ in range(common.EMPTY_REPS):
        t = time.perf_counter()
        await call(pool, "seq", {"n": 0})
        empties.append(time.perf_counter() - t)
    c0 = r.cpu()
    t = time.perf_counter()
    got = await call(pool, "seq", {"n": n})
    dt = time.perf_counter() - t
    assert got == n, got
    await pool.close()
    return {**common.seq_result(n, dt, common.median_s(empties)), **cpu_delta(c0, r.cpu())}


async def bench_tput(r: Restate, w: int, conns: int) -> dict[str, Any]:
    # All W calls go out at once over `conns` keep-alive connections. An ingress call holds its
    # connection until the invocation ends, so at most `conns` run at a time (Stepstone's
    # worker runs 100 at a time too).
    pool = common.HttpPool("127.0.0.1", r.ingress, conns)
    await call(pool, "three", {"k": -1})
    c0 = r.cpu()
    t = time.perf_counter()
    results = await asyncio.gather(*(call(pool, "three", {"k": k}) for k in range(w)))
    dt = time.perf_counter() - t
    assert results == list(range(w))
    cpu = cpu_delta(c0, r.cpu())
    await pool.close()
    return {**common.tput_result(w, dt, 0.0), "http_conns": conns, **cpu}


async def bench_lat(r: Restate, runs: int) -> dict[str, Any]:
    pool = common.HttpPool("127.0.0.1", r.ingress, 1)
    for k in range(common.WARMUP):
        await call(pool, "one", {"k": k})
    samples = []
    c0 = r.cpu()
    for k in range(runs):
        t = time.perf_counter()
        got = await call(pool, "one", {"k": k})
        samples.append(time.perf_counter() - t)
        assert got == k, got
    cpu = cpu_delta(c0, r.cpu())
    await pool.close()
    per_run = {f"{k}_per_run": round(v / runs, 5) for k, v in cpu.items()}
    return {"runs": runs, **common.lat_stats(samples), **per_run}


async def main_async(args: argparse.Namespace) -> None:
    fields = {"system": "restate", "config": args.config, "run": args.run}
    extra = ""
    if args.config == "no_fsync":  # for a durability comparison only: log-server WAL fsync off
        extra = "[log-server]\nrocksdb-disable-wal-fsync = true\n"
    t = time.perf_counter()
    r = Restate(Path(args.server), extra)
    try:
        await r.ready()
        common.emit({"bench": "launch", **fields, "seconds": round(time.perf_counter() - t, 3)})
        if "seq" in args.only:
            common.emit({"bench": "seq", **fields, **await bench_seq(r, args.n)})
        if "tput" in args.only:
            row = await bench_tput(r, args.w, args.http_conns)
            common.emit({"bench": "tput_start", **fields, **row})
        if "lat" in args.only:
            common.emit({"bench": "lat_start", **fields, **await bench_lat(r, args.lat_runs)})
    finally:
        r.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, help="the restate-server binary")
    ap.add_argument("--run", type=int, default=0)
    ap.add_argument("--config", default="default", choices=["default", "no_fsync"])
    ap.add_argument("--n", type=int, default=common.N_STEPS)
    ap.add_argument("--w", type=int, default=common.W_WORKFLOWS)
    ap.add_argument("--lat-runs", type=int, default=common.LAT_RUNS)
    ap.add_argument("--http-conns", type=int, default=100)
    ap.add_argument("--only", default="seq,tput,lat")
    args = ap.parse_args()
    common.emit(
        {
            "bench": "env",
            "system": "restate",
            "server": version(Path(args.server)),
            "sdk": md.version("restate-sdk"),
            "hypercorn": md.version("hypercorn"),
            "python": sys.version.split()[0],
        }
    )
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
