"""SIGKILL a real worker process at random instants, many times: nothing recorded is lost,
a completed step never runs again, and interrupted attempts are recorded and retried."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson

from stepstone.model import history as h
from stepstone.model.records import EventRecord
from stepstone.storage import open_storage
from tests.engine.crash_worker import STEPS, Crashy

ROOT = Path(__file__).resolve().parents[2]
KILLS = 25


async def instance_state(url: str) -> tuple[str, list[EventRecord]]:
    store = open_storage(url)
    await store.open()
    try:
        workflow = await store.get_workflow("default", "crashy")
        assert workflow is not None
        record = await store.get_instance(workflow.pk, "victim")
        assert record is not None
        return record.status, await store.load_events(record.pk)
    finally:
        await store.close()


def start_worker(url: str, log: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.engine.crash_worker", url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "CRASH_LOG": str(log)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


async def test_sigkill_at_random_instants_loses_nothing(tmp_path: Path) -> None:
    from stepstone import Engine

    url = f"sqlite:///{tmp_path / 'crash.db'}"
    log = tmp_path / "effects.log"
    engine = await Engine.open(url, run_worker=False)
    await engine.register("crashy", Crashy)
    await engine.workflow("crashy").create(id="victim")
    await engine.close()

    rng = random.Random(7)
    kills = 0
    while kills < KILLS:
        proc = start_worker(url, log)
        await asyncio.sleep(rng.uniform(0.02, 0.15))
        proc.kill()
        stop(proc)
        kills += 1
        status, _ = await instance_state(url)
        if status == "complete":
            break
    proc = start_worker(url, log)
    try:
        async with asyncio.timeout(60):
            while (await instance_state(url))[0] != "complete":
                await asyncio.sleep(0.05)
    finally:
        proc.terminate()
        stop(proc)

    status, events = await instance_state(url)
    history = h.fold(events)
    completed = Counter(e.step_name for e in events if e.type == "step_completed")
    assert status == "complete"
    assert kills >= 5, "the instance finished before the test could kill it enough"
    assert len(completed) == STEPS
    assert set(completed.values()) == {1}, "a step was recorded as completed twice"
    output = next(e for e in events if e.type == "workflow_completed")
    assert orjson.loads(output.data or b"{}")["output"] == sum(range(STEPS))

    # A completed step never runs again: no execution starts after its completion was recorded.
    done_at = {s.name: s.end for s in history.steps.values() if s.kind == "do"}
    for line in log.read_text().splitlines():
        ts, kind, index, _attempt = line.split()
        if kind == "start":
            step_end = done_at[f"work-{int(index) + 1}"]
            assert step_end is not None and int(ts) <= step_end, f"step {index} ran again"

    # Interrupted attempts that had been recorded show up as internal failures, then a retry.
    interrupted = [
        a for s in history.steps.values() for a in s.attempts if a.error == h.INTERNAL_ATTEMPT_ERROR
    ]
    for step in history.steps.values():
        if step.kind == "do":
            assert step.success is True
            assert step.attempts[-1].success is True
    starts = Counter(line.split()[2] for line in log.read_text().splitlines() if " start " in line)
    assert sum(starts.values()) >= STEPS
    print(
        f"kills={kills} interrupted_recorded={len(interrupted)} executions={sum(starts.values())}"
    )
