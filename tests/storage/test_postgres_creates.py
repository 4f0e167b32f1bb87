"""Concurrent creates on PostgreSQL share transactions, and each still succeeds or fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from stepstone.errors import InstanceAlreadyExists
from stepstone.storage.base import InstanceRecord, NewInstance, WorkflowDefinition, WorkflowRecord
from stepstone.storage.postgres import PostgresStorage
from tests.storage.conftest import NOW


@pytest.fixture
async def pg(pg_database: str) -> AsyncIterator[PostgresStorage]:
    # Two connections: one create in flight at a time, so the others queue and are merged.
    store = PostgresStorage(pg_database, max_connections=2)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def wf(pg: PostgresStorage) -> WorkflowRecord:
    return await pg.register_workflow("acct", "orders", WorkflowDefinition("O", "shop"), NOW)


async def create(
    pg: PostgresStorage, wf: WorkflowRecord, *ids: str, skip: bool = False, now: int = NOW
) -> list[InstanceRecord]:
    items = [NewInstance(i, f'{{"id":"{i}"}}'.encode()) for i in ids]
    return await pg.create_instances(wf.pk, wf.version.id, items, now, skip_existing=skip)


async def test_many_creates_at_once_each_get_their_own_records(
    pg: PostgresStorage, wf: WorkflowRecord
) -> None:
    results = await asyncio.gather(*(create(pg, wf, f"i{n}", now=NOW + n) for n in range(30)))
    assert [[r.id for r in records] for records in results] == [[f"i{n}"] for n in range(30)]
    for n, [record] in enumerate(results):
        again = await pg.get_instance(wf.pk, f"i{n}")
        assert again is not None
        assert (again.pk, again.created_on, again.params) == (
            record.pk,
            record.created_on,
            f'{{"id":"i{n}"}}'.encode(),
        )
    assert (await pg.count_instances(wf.pk)) == {"queued": 30}


async def test_a_create_that_finds_its_id_taken_fails_alone_and_stores_nothing(
    pg: PostgresStorage, wf: WorkflowRecord
) -> None:
    await create(pg, wf, "taken")
    outcomes = await asyncio.gather(
        create(pg, wf, "first"),  # in flight alone: the rest queue behind it and are merged
        create(pg, wf, "fresh-1", "taken"),
        create(pg, wf, "fresh-2"),
        create(pg, wf, "taken", "fresh-3", skip=True),
        create(pg, wf, "same"),
        create(pg, wf, "same"),
        return_exceptions=True,
    )
    first, clash, fresh, skipping, same_a, same_b = outcomes
    assert [r.id for r in first] == ["first"]  # type: ignore[union-attr]
    assert isinstance(clash, InstanceAlreadyExists)
    assert [r.id for r in fresh] == ["fresh-2"]  # type: ignore[union-attr]
    assert [r.id for r in skipping] == ["fresh-3"]  # type: ignore[union-attr]
    # Two creates asking for one id: one gets it, the other is told it exists.
    assert sorted(type(o).__name__ for o in (same_a, same_b)) == [
        "InstanceAlreadyExists",
        "list",
    ]
    assert await pg.get_instance(wf.pk, "fresh-1") is None
    assert (await pg.count_instances(wf.pk)) == {"queued": 5}
