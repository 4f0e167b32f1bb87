"""The heartbeat acts on the claim it renewed, not on a newer claim of the same instance."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stepstone.engine.worker import Worker, WorkerSettings
from stepstone.storage.base import Claim, NewInstance, Release, WorkflowDefinition
from stepstone.storage.sqlite import SqliteStorage

NOW = 1_700_000_000_000


class RenewalOnItsWay(SqliteStorage):
    """SQLite whose lease renewals wait at a gate, as a round trip to a busy server can."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"sqlite:///{path}", str(path))
        self.renewing = asyncio.Event()
        self.gate = asyncio.Event()

    async def renew_leases(
        self, owner: str, claims: Sequence[Claim], now: int, lease_ms: int
    ) -> dict[int, str | None]:
        self.renewing.set()
        await self.gate.wait()
        return await super().renew_leases(owner, claims, now, lease_ms)


def unused(*_: Any) -> Any:
    raise AssertionError("the worker's main loop is not running in this test")


async def test_an_answer_about_an_older_claim_leaves_the_new_activation_alone(
    tmp_path: Path,
) -> None:
    storage = RenewalOnItsWay(tmp_path / "s.db")
    await storage.open()
    worker = Worker(storage, unused, unused, settings=WorkerSettings(lease_ms=150))
    beat: asyncio.Task[None] | None = None
    activations: list[asyncio.Task[None]] = []
    try:
        workflow = await storage.register_workflow(
            "acct", "orders", WorkflowDefinition("Orders", "shop"), NOW
        )
        await storage.create_instances(
            workflow.pk, workflow.version.id, [NewInstance("a", b"{}")], NOW, skip_existing=False
        )
        [first] = await storage.claim_runnable(worker.owner, 1, NOW, 60_000, [workflow.pk])
        activations.append(asyncio.create_task(asyncio.sleep(60)))
        worker._active[first.instance.pk] = (first, activations[0], None)

        beat = asyncio.create_task(worker._beat())
        await asyncio.wait_for(storage.renewing.wait(), 5)
        # While the renewal of the first claim is on its way, that activation ends (a sleep)
        # and the worker claims the instance again.
        await storage.release_instance(first, Release("waiting", runnable_at=NOW), NOW)
        [second] = await storage.claim_runnable(worker.owner, 1, NOW, 60_000, [workflow.pk])
        assert second.epoch == first.epoch + 1
        activations.append(asyncio.create_task(asyncio.sleep(60)))
        worker._active[second.instance.pk] = (second, activations[1], None)
        storage.renewing.clear()
        storage.gate.set()
        # The beat renews again only once it has acted on the answer (first claim: no longer
        # held) to the renewal let through.
        await asyncio.wait_for(storage.renewing.wait(), 5)

        assert not activations[1].cancelled() and not activations[1].done()
        held = await storage.renew_leases(worker.owner, [second], NOW, 60_000)
        assert held == {second.instance.pk: "running"}
    finally:
        for task in [*activations, *([beat] if beat else [])]:
            task.cancel()
        await asyncio.gather(*activations, *([beat] if beat else []), return_exceptions=True)
        await storage.close()
