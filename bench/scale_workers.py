#!/usr/bin/env python3
"""Throughput with 1, 2 and 4 worker processes sharing one PostgreSQL (issue 4).

Each configuration gets a fresh database: N ``stepstone worker`` processes start, then W
instances of a 3-step no-op workflow are created in batches of 100 and timed until every one is
complete. Prints one JSON line per configuration and writes bench/results/<date>-scale.json.

Usage: python bench/scale_workers.py [--workers 1,2,4] [--w 1000] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from stepstone import Engine

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PG = os.environ.get(
    "STEPSTONE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def database_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


async def one_run(admin_url: str, workers: int, count: int, concurrency: int) -> dict[str, float]:
    name = f"stepstone_scale_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url(admin_url, name)
    procs: list[asyncio.subprocess.Process] = []
    try:
        engine = await Engine.open(url, run_worker=False)
        await engine.register("three", class_name="ThreeSteps", script_name="bench.workflows")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for _ in range(workers):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "stepstone",
                    "worker",
                    "--db",
                    url,
                    "--concurrency",
                    str(concurrency),
                    cwd=REPO,
                    env=env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
        await asyncio.sleep(3)  # let every worker connect and learn the workflow
        workflow = await engine.ops.workflow("default", "three")
        binding = engine.workflow("three")
        started = time.perf_counter()
        for first in range(0, count, 100):
            await binding.create_batch(
                [{"id": f"i{k}", "params": {"k": k}} for k in range(first, min(count, first + 100))]
            )
        while (await engine.storage.count_instances(workflow.pk)).get("complete", 0) < count:
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - started
        await engine.close()
        return {
            "workers": workers,
            "instances": count,
            "seconds": round(seconds, 3),
            "wf_per_s": round(count / seconds, 1),
            "steps_per_s": round(3 * count / seconds, 1),
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await proc.wait()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--w", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--pg-url", default=DEFAULT_PG)
    args = ap.parse_args()
    rows = []
    for workers in (int(n) for n in args.workers.split(",")):
        row = await one_run(args.pg_url, workers, args.w, args.concurrency)
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = REPO / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%d}-scale.json"
    out.write_text(json.dumps({"nproc": os.cpu_count(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
