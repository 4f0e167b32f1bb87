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


class CreateBatcher:
    def __init__(self, send_one: SendOne, insert_many: InsertMany, max_inflight: int) -> None:
        self._send_one = send_one
        self._insert_many = insert_many
        self._max_inflight = max_inflight
        self._inflight = 0
        self._queued: list[_Create] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def create(
        self,
        workflow_pk: int,
        version_id: str,
        items: Sequence[NewInstance],
        now: int,
        *,
        skip_existing: bool,
    ) -> list[InstanceRecord]:
        if self._inflight < self._max_inflight and not self._queued:
            # Alone: this caller sends its own statement, no task and no future in between.
            self._inflight += 1
            try:
                return await self._send_one(workflow_pk, version_id, items, now, skip_existing)
            finally:
                self._inflight -= 1
                self._send_queued()
        entry = _Create(workflow_pk, version_id, items, now, skip_existing)
        self._queued.append(entry)
        self._send_queued()
        return await entry.done

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _send_queued(self) -> None:
        while self._queued and self._inflight < self._max_inflight:
            first = self._queued[0]
            key = (first.workflow_pk, first.version_id)
            group = [c for c in self._queued if (c.workflow_pk, c.version_id) == key]
            self._queued = [c for c in self._queued if (c.workflow_pk, c.version_id) != key]
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._commit(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _commit(self, group: list[_Create]) -> None:
        try:
            if len(group) > 1:
                try:
                    created = await self._merged(group)
                except _LostAnId:
                    pass  # each on its own below, to fail alone
                except Exception as exc:
                    for c in group:
                        _settle(c, exc)
                    return
                else:
                    for c, records in zip(group, created, strict=True):
                        _settle(c, records)
                    return
            await asyncio.gather(*(self._alone(c) for c in group))
        finally:
            self._inflight -= 1
            self._send_queued()

    async def _alone(self, c: _Create) -> None:
        try:
            records = await self._send_one(
                c.workflow_pk, c.version_id, c.items, c.now, c.skip_existing
            )
        except Exception as exc:
            _settle(c, exc)
        else:
            _settle(c, records)

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


def _settle(c: _Create, outcome: list[InstanceRecord] | BaseException) -> None:
    if c.done.done():  # its caller stopped waiting; what was done stands
        return
    if isinstance(outcome, BaseException):
        c.done.set_exception(outcome)
    else:
        c.done.set_result(outcome)
