"""Group commit of instance creation on PostgreSQL: concurrent creates share one transaction.

Creating is one statement in a transaction of three round trips (its id is checked after a lost
connection). Many clients creating at once would each pay them; instead, a create that finds
fewer than ``max_inflight`` transactions under way sends at once, and those arriving while all
are in flight queue up and leave together, one statement per workflow version.

Each create must still succeed or fail alone: one whose id is taken fails with nothing of it
stored. So a merged transaction in which any create that may not skip existing ids lost an id
is rolled back whole, and each of its creates is sent again on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from stepstone.storage.base import InstanceRecord, NewInstance
from stepstone.storage.postgres_batch import Batcher, settle


@dataclass
class _Create:
    workflow_pk: int
    version_id: str
    items: Sequence[NewInstance]
    now: int
    skip_existing: bool
    done: asyncio.Future[list[InstanceRecord]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class _LostAnId(Exception):
    """A merged create must roll back: one of its creates lost an id it may not skip."""


# (workflow_pk, version_id, items, now, skip_existing) -> the records created.
SendOne = Callable[[int, str, Sequence[NewInstance], int, bool], Awaitable[list[InstanceRecord]]]
# (workflow_pk, version_id, items, now, check) -> {id: pk} of the rows inserted, in one
# transaction that ``check`` (given that map) rolls back by raising.
InsertMany = Callable[
    [int, str, Sequence[NewInstance], int, Callable[[dict[str, int]], None]],
    Awaitable[dict[str, int]],
]


class CreateBatcher(Batcher[_Create]):
    def __init__(self, send_one: SendOne, insert_many: InsertMany, max_inflight: int) -> None:
        super().__init__(max_inflight)
        self._send_one = send_one
        self._insert_many = insert_many

    async def create(
        self,
        workflow_pk: int,
        version_id: str,
        items: Sequence[NewInstance],
        now: int,
        *,
        skip_existing: bool,
    ) -> list[InstanceRecord]:
        if self._idle:
            return await self._alone(
                self._send_one(workflow_pk, version_id, items, now, skip_existing)
            )
        entry = _Create(workflow_pk, version_id, items, now, skip_existing)
        self._enqueue(entry)
        return await entry.done

    def _take(self) -> list[_Create]:
        # One statement per workflow version.
        key = (self._queued[0].workflow_pk, self._queued[0].version_id)
        group = [c for c in self._queued if (c.workflow_pk, c.version_id) == key]
        self._queued = [c for c in self._queued if (c.workflow_pk, c.version_id) != key]
        return group

    async def _send(self, group: list[_Create]) -> None:
        if len(group) > 1:
            try:
                created = await self._merged(group)
            except _LostAnId:
                pass  # each on its own below, to fail alone
            except Exception as exc:
                for c in group:
                    settle(c.done, exc)
                return
            else:
                for c, records in zip(group, created, strict=True):
                    settle(c.done, records)
                return
        await asyncio.gather(*(self._on_its_own(c) for c in group))

    async def _on_its_own(self, c: _Create) -> None:
        try:
            records = await self._send_one(
                c.workflow_pk, c.version_id, c.items, c.now, c.skip_existing
            )
        except Exception as exc:
            settle(c.done, exc)
        else:
            settle(c.done, records)

    async def _merged(self, group: list[_Create]) -> list[list[InstanceRecord]]:
        """The group in one statement, stamped with its latest ``now``; records per create."""
        now = max(c.now for c in group)
        first = group[0]
        # Which create each id goes to: the first that asks for it, as if they ran in order.
        owner: dict[str, int] = {}
        for n, c in enumerate(group):
            for item in c.items:
                owner.setdefault(item.id, n)
        items = [item for n, c in enumerate(group) for item in c.items if owner[item.id] == n]
        if len(items) != len({item.id for item in items}):
            raise _LostAnId  # one create asked twice for an id: its own statement says so

        def check(inserted: dict[str, int]) -> None:
            for n, c in enumerate(group):
                if not c.skip_existing and any(
                    owner[item.id] != n or item.id not in inserted for item in c.items
                ):
                    raise _LostAnId

        inserted = await self._insert_many(first.workflow_pk, first.version_id, items, now, check)
        return [
            [
                item.as_created(inserted[item.id], c.workflow_pk, c.version_id, now)
                for item in c.items
                if owner[item.id] == n and item.id in inserted
            ]
            for n, c in enumerate(group)
        ]
