#!/usr/bin/env python3
"""A bulk job over 100,000 instances (issue 16): it finishes, and memory stays flat.

Creates N queued instances of one workflow in a fresh SQLite file (or PostgreSQL database),
starts a bulk ``terminate`` job over all of them and runs it with ``BulkRunner`` in this
process, sampling the resident set size while it runs. The job pages by (created_on, id), so
its memory must not grow with N: the report gives the RSS before the job, the peak during it
and the growth, beside the job's time and summary. Writes bench/results/<date>-bulk.json.

Usage: python bench/bulk.py [--n 100000] [--action terminate] [--url sqlite:///path.db]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from stepstone.bulk import BulkRunner, BulkService, make_spec
from stepstone.model.actors import Actor
from stepstone.ops import CreateRequest, Operations
from stepstone.storage import open_storage

REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


async def main(n: int, action: str, url: str) -> dict[str, object]:
    storage = open_storage(url)
    await storage.open()
    ops = Operations(storage, check_importable=False)
    await ops.put_workflow("bench", "bulk", class_name="Bulk", script_name="bulk")
    started = time.perf_counter()
    for start in range(0, n, 1000):
        requests = [CreateRequest(id=f"i-{k:07d}") for k in range(start, min(n, start + 1000))]
        await ops.create_instances("bench", "bulk", requests, skip_existing=False)
    create_s = time.perf_counter() - started

    service = BulkService(ops)
    job = await service.start("bench", "bulk", make_spec(action), Actor("token", "bench", "b"))
    before = rss_bytes()
    peak = before
    samples: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            now = rss_bytes()
            peak = max(peak, now)
            samples.append(now)
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    await BulkRunner(ops).tick()
    job_s = time.perf_counter() - started
    done.set()
    await sampler
    final = await service.get("bench", job.id)
    await storage.close()
    quarter = max(1, len(samples) // 4)
    return {
        "n": n,
        "action": action,
        "store": url.split("://", maxsplit=1)[0],
        "create_s": round(create_s, 1),
        "job_s": round(job_s, 1),
        "instances_per_s": round(n / job_s),
        "status": final.status,
        "done": final.done,
        "skipped": final.skipped,
        "failed": final.failed,
        "rss_before_job_mb": round(before / 2**20, 1),
        "rss_peak_job_mb": round(peak / 2**20, 1),
        "rss_growth_mb": round((peak - before) / 2**20, 1),
        # Flat memory: the last quarter of the run is no larger than the first.
        "rss_first_quarter_mb": round(max(samples[:quarter], default=before) / 2**20, 1),
        "rss_last_quarter_mb": round(max(samples[-quarter:], default=before) / 2**20, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--action", default="terminate")
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{tmp}/bulk.db?synchronous=NORMAL"
        report = asyncio.run(main(args.n, args.action, url))
    print(json.dumps(report))
    out = REPO / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%d}-bulk.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(0 if report["status"] == "complete" else 1)
