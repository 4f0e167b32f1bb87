"""Terminate, restart and delete reach a step body running in another worker process.

Two ``stepstone worker`` processes share one PostgreSQL; the test process acts as the API
(an engine without a worker). The body writes a file when it starts and when it gets
``CancelledError``, so the test learns what happened in the other process without sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from stepstone import Engine
from tests.scale.test_workers import Cluster

pytestmark = pytest.mark.slow

CONFIG = """
[[workflows]]
name = "held"
class_name = "HeldStep"
script_name = "tests.scale.stop_flows"
"""
# The bound on another worker is 2 s plus one notification; a notification on a
# loopback connection takes milliseconds, so 2 s is the bound asserted.
OTHER_WORKER_BOUND_S = 2.0


@pytest.fixture
def cluster(pg_database: str, tmp_path: Path) -> Iterator[Cluster]:
    workers = Cluster(pg_database, tmp_path)
    workers.config.write_text(CONFIG)
    try:
        yield workers
    finally:
        workers.stop()


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[Engine]:
    eng = await Engine.open(cluster.url, config=cluster.config, run_worker=False)
    try:
        yield eng
    finally:
        await eng.close()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def appeared(path: Path, cluster: Cluster, timeout: float = 30.0) -> tuple[float, int]:
    """When the file was written (wall clock, shared by the processes) and by which pid."""
    try:
        async with asyncio.timeout(timeout):
            while not _read(path):
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"{path.name} never appeared\n{cluster.logs()}") from None
    at, pid = _read(path).split()
    return float(at), int(pid)


async def running_elsewhere(api: Engine, cluster: Cluster, instance_id: str) -> Path:
    folder = cluster.folder / "bodies"
    folder.mkdir(exist_ok=True)
    await api.workflow("held").create(id=instance_id, params={"dir": str(folder)})
    _, pid = await appeared(folder / f"{instance_id}.start.0", cluster)
    assert pid in {p.pid for p in cluster.workers}
    return folder


async def test_terminate_cancels_a_step_running_on_another_worker(
    cluster: Cluster, api: Engine
) -> None:
    cluster.start(2, lease_seconds=10.0)
    folder = await running_elsewhere(api, cluster, "t")
    since = time.time()
    await (await api.workflow("held").get("t")).terminate()
    cancelled_at, _ = await appeared(folder / "t.cancel.0", cluster, OTHER_WORKER_BOUND_S + 1)
    latency = cancelled_at - since
    print(f"\nterminate on another worker: body cancelled {latency * 1000:.1f} ms after the call")
    assert latency < OTHER_WORKER_BOUND_S
    status = await (await api.workflow("held").get("t")).status()
    assert status["status"] == "terminated"


async def test_restart_on_another_worker_never_overlaps_the_old_run(
    cluster: Cluster, api: Engine
) -> None:
    cluster.start(2, lease_seconds=10.0)
    folder = await running_elsewhere(api, cluster, "r")
    handle = await api.workflow("held").get("r")
    since = time.time()
    await handle.restart()
    cancelled_at, _ = await appeared(folder / "r.cancel.0", cluster, OTHER_WORKER_BOUND_S + 1)
    latency = cancelled_at - since
    print(f"\nrestart on another worker: body cancelled {latency * 1000:.1f} ms after the call")
    assert latency < OTHER_WORKER_BOUND_S
    restarted_at, _ = await appeared(folder / "r.start.1", cluster)
    assert restarted_at >= cancelled_at
    assert (await handle.wait(30))["output"] == 1
    assert not (folder / "r.start.2").exists()


async def test_delete_cancels_a_step_running_on_another_worker(
    cluster: Cluster, api: Engine
) -> None:
    cluster.start(2, lease_seconds=10.0)
    folder = await running_elsewhere(api, cluster, "d")
    since = time.time()
    await (await api.workflow("held").get("d")).delete()
    cancelled_at, _ = await appeared(folder / "d.cancel.0", cluster, OTHER_WORKER_BOUND_S + 1)
    latency = cancelled_at - since
    print(f"\ndelete on another worker: body cancelled {latency * 1000:.1f} ms after the call")
    assert latency < OTHER_WORKER_BOUND_S
