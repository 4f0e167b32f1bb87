"""A store outage under a running workflow is not the workflow's error (issue 11).

The store fills while a step runs, so recording the step's result fails: SQLite's own
``SQLITE_FULL``, from a page cap on the writer's connection (a real tmpfs filled to the brim
does not do it here: the WAL's preallocated room takes a step's result).
Workflow code that catches ``Exception`` around the step must not see that failure (it would
take an outage for a failed step and carry on); the activation ends with nothing recorded, and
once space is freed the instance runs the step again and completes with its real output.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from stepstone import Engine, WorkerSettings, WorkflowEntrypoint
from stepstone.storage.base import Claim
from tests.engine.conftest import wait_for

LIMIT: dict[str, Any] = {}
SEEN: list[str] = []
BIG = "x" * 900_000
NO_CAP = 1 << 30


class FillsTheStore(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def fill() -> str:
            if not LIMIT.get("capped"):
                LIMIT["capped"] = True
                conn = LIMIT["conn"]
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count={pages + 5}")
            return BIG

        try:
            output = await step.do("fill", fill)
        except Exception as exc:  # what an outage must never reach
            SEEN.append(type(exc).__name__)
            return "swallowed"
        return len(output)


async def test_a_full_store_under_a_step_is_not_a_step_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    LIMIT.clear()
    SEEN.clear()
    engine = await Engine.open(
        f"sqlite:///{tmp_path / 'stepstone.db'}",
        worker_settings=WorkerSettings(poll_ms=25, lease_ms=600),
    )
    # The one write connection: the page cap must be on it to refuse the step's result.
    LIMIT["conn"] = engine.storage._writer._conn  # type: ignore[attr-defined]
    assert engine.worker is not None
    ended = asyncio.Event()
    activate = engine.worker._activate

    async def observed(claim: Claim) -> None:
        try:
            await activate(claim)
        finally:
            ended.set()

    monkeypatch.setattr(engine.worker, "_activate", observed)
    try:
        await engine.register("fills", FillsTheStore)
        handle = await engine.workflow("fills").create(id="f1")
        # The result's write is refused while the disk is full: nothing may end the instance.
        async with asyncio.timeout(10):
            while engine.storage.health.failing is None:  # type: ignore[attr-defined]
                assert (await handle.status())["status"] != "complete", "the write did not fail"
                await asyncio.sleep(0.01)
        # Once the activation has ended, all it did is recorded: nothing ended the instance.
        await asyncio.wait_for(ended.wait(), 10)
        assert (await handle.status())["status"] not in ("complete", "errored")
        assert SEEN == []
        LIMIT["conn"].execute(f"PRAGMA max_page_count={NO_CAP}")
        status = await wait_for(handle, "complete", "errored", timeout=20)
        assert SEEN == []
        assert status["status"] == "complete"
        assert status["output"] == len(BIG)
    finally:
        await engine.close()
