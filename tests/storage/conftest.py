"""Helpers shared by the storage contract tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from stepstone.storage import open_storage
from stepstone.storage.base import (
    Claim,
    InstanceRecord,
    NewInstance,
    Storage,
    WorkflowDefinition,
    WorkflowRecord,
)
from stepstone.storage.sqlite import SqliteStorage
from stepstone.storage.sqlite_writer import WalSyncer
from tests.conftest import WITH_PORTABLE, backend_urls

NOW = 1_700_000_000_000
LEASE = 30_000


@pytest.fixture(params=WITH_PORTABLE)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_urls(request, tmp_path)


@dataclass
class Fixture:
    storage: Storage
    workflow: WorkflowRecord

    async def create(
        self, *ids: str, now: int = NOW, params: bytes = b"{}", skip: bool = False
    ) -> list[str]:
        created = await self.storage.create_instances(
            self.workflow.pk,
            self.workflow.version.id,
            [NewInstance(i, params) for i in ids],
            now,
            skip_existing=skip,
        )
        return [r.id for r in created]

    async def get(self, instance_id: str) -> InstanceRecord:
        found = await self.storage.get_instance(self.workflow.pk, instance_id)
        assert found is not None, instance_id
        return found

    async def claim(
        self, owner: str = "w1", limit: int = 10, now: int = NOW, lease: int = LEASE
    ) -> list[Claim]:
        return await self.storage.claim_runnable(owner, limit, now, lease, [self.workflow.pk])

    async def claim_one(self, instance_id: str, owner: str = "w1", now: int = NOW) -> Claim:
        claims = await self.claim(owner, limit=1, now=now)
        assert [c.instance.id for c in claims] == [instance_id]
        return claims[0]

    async def event_types(self, instance_id: str) -> list[str]:
        pk = (await self.get(instance_id)).pk
        return [e.type for e in await self.storage.load_events(pk)]


def ids(records: Sequence[InstanceRecord]) -> list[str]:
    return [r.id for r in records]


@pytest.fixture
async def fx(storage: Storage) -> Fixture:
    workflow = await storage.register_workflow(
        "acct", "orders", WorkflowDefinition("OrderWorkflow", "shop.orders"), NOW
    )
    return Fixture(storage, workflow)


def syncer_of(storage: SqliteStorage) -> WalSyncer:
    syncer = storage._writer._syncer if storage._writer is not None else None
    assert syncer is not None, "a file at synchronous=FULL syncs its WAL"
    return syncer


async def claimed(tmp_path: Path) -> tuple[SqliteStorage, Claim]:
    """A SQLite store at synchronous=FULL (the default) with instance "a" of workflow
    "orders" claimed."""
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    assert isinstance(storage, SqliteStorage)
    await storage.open()
    workflow = await storage.register_workflow(
        "acct", "orders", WorkflowDefinition("Orders", "shop"), NOW
    )
    await storage.create_instances(
        workflow.pk, workflow.version.id, [NewInstance("a", b"{}")], NOW, skip_existing=False
    )
    [claim] = await storage.claim_runnable("w1", 1, NOW, 30_000, [workflow.pk])
    return storage, claim
