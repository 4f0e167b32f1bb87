"""A workflow's concurrency limit holds across worker processes on one PostgreSQL.

Four ``stepstone worker`` processes race for 2,000 instances of a workflow capped at 5. Each
step body logs when it starts and ends (a body runs only while its instance holds a lease: it
starts after the claim commits and ends before the release), and the test process samples the
live leases meanwhile; neither may ever see more than 5. In one instance of four a short sleep
between the two steps sends it back through a wake-up, which NOTIFY hands to all workers at
once (every instance would double the activations, and the wall time, for no new race).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from stepstone import Engine, WorkflowEntrypoint
from stepstone.storage.base import NewInstance
from tests.scale.test_workers import Cluster

pytestmark = pytest.mark.slow

LIMIT = 5
COUNT = 2000
WORKERS = 4

CONFIG = f"""
[[workflows]]
name = "capped"
class_name = "Metered"
script_name = "tests.scale.test_concurrency_race"
concurrency = {{ limit = {LIMIT} }}

[[workflows]]
name = "free"
class_name = "Metered"
script_name = "tests.scale.test_concurrency_race"
"""


def _log(line: str) -> None:
    # One write per line on an O_APPEND file: lines from many processes never interleave.
    fd = os.open(os.environ["RACE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Metered(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def body(ctx: dict[str, Any]) -> int:
            started = time.monotonic_ns()  # CLOCK_MONOTONIC: one clock for every process
            await asyncio.sleep(0.003)
            _log(f"{event.instance_id} {started} {time.monotonic_ns()}\n")
            return 1

        await step.do("first", body)
        if event.payload["n"] % 4 == 0:
            await step.sleep("breathe", 30)
        return await step.do("second", body)


def _peak(lines: list[str], prefix: str) -> int:
    """The most intervals open at once among the logged bodies of instances named ``prefix*``."""
    edges: list[tuple[int, int]] = []
    for line in lines:
        instance, start, end = line.split()
        if instance.startswith(prefix):
            edges += [(int(start), 1), (int(end), -1)]
    # An end at the very instant of a start closes first: touching is not overlapping.
    edges.sort(key=lambda e: (e[0], e[1]))
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


async def _sample(url: str, workflow_pk: int, stop: asyncio.Event) -> tuple[int, int]:
    """The most live leases of the workflow seen at once, and how many samples were taken."""
    conn = await asyncpg.connect(url)
    peak = samples = 0
    try:
        while not stop.is_set():
            running = await conn.fetchval(
                "SELECT count(*) FROM instances WHERE workflow_pk = $1"
                " AND lease_owner IS NOT NULL AND lease_expires >= $2",
                workflow_pk,
                int(time.time() * 1000),
            )
            peak, samples = max(peak, running), samples + 1
            await asyncio.sleep(0.002)
    finally:
        await conn.close()
    return peak, samples


async def test_four_workers_never_run_more_than_the_limit(
    pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "bodies.log"
    monkeypatch.setenv("RACE_LOG", str(log))
    cluster = Cluster(pg_database, tmp_path)
    cluster.config.write_text(CONFIG)
    engine = await Engine.open(cluster.url, config=cluster.config, run_worker=False)
    try:
        capped = await engine.storage.get_workflow("default", "capped")
        free = await engine.storage.get_workflow("default", "free")
        assert capped is not None and free is not None
        assert capped.version.concurrency_limit == LIMIT
        cluster.start(WORKERS, concurrency=50)
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample(cluster.url, capped.pk, stop))
        started = time.monotonic()
        # An uncapped workflow alongside: it must not be held back by the capped one.
        for record, count in ((capped, COUNT), (free, 200)):
            for first in range(0, count, 250):
                items = [
                    NewInstance(f"{record.name}-{n:05d}", orjson.dumps({"n": n}))
                    for n in range(first, min(count, first + 250))
                ]
                await engine.storage.create_instances(
                    record.pk,
                    record.version.id,
                    items,
                    int(time.time() * 1000),
                    skip_existing=False,
                )
        restarted = False
        deadline = started + 240
        while True:
            counts = await engine.storage.count_instances(capped.pk)
            assert not counts.get("errored"), cluster.logs()
            done = counts.get("complete", 0)
            if done == COUNT:
                break
            if not restarted and done >= COUNT // 2:
                # A worker stopping and a new one joining mid-race change nothing.
                cluster.workers[0].send_signal(signal.SIGTERM)
                cluster.start(1, concurrency=50)
                restarted = True
            assert time.monotonic() < deadline, f"{counts}\n{cluster.logs()}"
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        stop.set()
        leased_peak, samples = await sampler
        free_counts = await engine.storage.count_instances(free.pk)
        assert free_counts.get("complete") == 200, free_counts
    finally:
        cluster.stop()
        await engine.close()
    lines = log.read_text().splitlines()
    assert sum(1 for line in lines if line.startswith("capped-")) == 2 * COUNT
    body_peak = _peak(lines, "capped-")
    print(
        f"\n{COUNT} capped instances, {WORKERS} workers, limit {LIMIT}: {elapsed:.1f} s;"
        f" most bodies at once {body_peak}, most live leases sampled {leased_peak}"
        f" ({samples} samples); uncapped peak {_peak(lines, 'free-')}"
    )
    assert body_peak <= LIMIT
    assert leased_peak <= LIMIT
    # The limit was reached, not merely respected by a trickle.
    assert body_peak == LIMIT
