"""Creating instances on PostgreSQL: the statements, and their group commit (concurrent
creates share one transaction).

A lone create whose ids must all be new is one statement in its own implicit transaction,
carrying its commit mark (one round trip).

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
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from stepstone.errors import InstanceAlreadyExists
from stepstone.model.events import EventType
from stepstone.storage.base import InstanceRecord, NewInstance, WorkflowChanged
from stepstone.storage.postgres_batch import Batcher, settle
from stepstone.storage.postgres_db import CHANNEL, COMMIT_MARKS, Database

# Only for instances created queued: one created claimed leaves the workers nothing to claim.
_NOTIFY_CREATED = f", CASE WHEN status = 'queued' THEN pg_notify('{CHANNEL}', '{{origin}}') END"


# Instances, their workflow_queued events, the workflow's triggered_on and the wake-up in one
# statement (one round trip); ids already present are skipped and left out of the answer.
# Nothing is created unless $2 is still the workflow's current version: no row then, which
# a lone create tells from a taken id, which fails its statement, and a create that may skip
# taken ids by asking for the version.
_CREATE_INSTANCES = (
    "WITH t AS (SELECT * FROM unnest($4::text[], $5::text[], $6::bytea[], $7::bytea[],"
    " $8::bigint[], $9::bigint[], $10::bytea[], $11::text[], $12::bigint[]) WITH ORDINALITY"
    " AS t(id, source, params, schedule, success, error, queued, owner, expires, n)),"
    " created AS (INSERT INTO instances (workflow_pk, id, version_id, status, trigger_source,"
    " params, schedule, created_on, modified_on, runnable_at, priority, success_retention_ms,"
    " error_retention_ms, lease_owner, lease_expires, epoch, started_on)"
    " SELECT $1, t.id, $2, CASE WHEN t.owner IS NULL THEN 'queued' ELSE 'running' END,"
    " t.source, t.params, t.schedule, $3, $3, $3, 1, t.success, t.error, t.owner, t.expires,"
    " CASE WHEN t.owner IS NULL THEN 0 ELSE 1 END,"
    " CASE WHEN t.owner IS NOT NULL THEN $3::bigint END"
    " FROM t WHERE EXISTS (SELECT 1 FROM workflows w WHERE w.pk = $1 AND w.version_id = $2)"
    " ORDER BY t.n ON CONFLICT (workflow_pk, id) DO NOTHING"
    " RETURNING pk, id, status),"
    " queued AS (INSERT INTO instance_events (instance_pk, ts, type, data)"
    f" SELECT c.pk, $3, '{EventType.WORKFLOW_QUEUED}', t.queued"
    " FROM created c JOIN t ON t.id = c.id"
    " ORDER BY t.n),"
    " triggered AS (UPDATE workflows SET triggered_on = $3"
    " WHERE pk = $1 AND EXISTS (SELECT 1 FROM created))"
    f" SELECT pk, id, txid_current(){_NOTIFY_CREATED} FROM created"
)


# A lone create whose every id must be new, as one statement in its own implicit transaction
# (one round trip) carrying its commit mark ($13): a taken id fails the whole statement.
_CREATE_ONCE = (
    f"WITH mark AS (INSERT INTO {COMMIT_MARKS} (token) VALUES ($13::uuid)), "
    + _CREATE_INSTANCES.removeprefix("WITH ").replace(
        " ON CONFLICT (workflow_pk, id) DO NOTHING", ""
    )
)


def _create_columns(version_id: str, unique: Sequence[NewInstance]) -> tuple[list[Any], ...]:
    """$4 to $12 of the create statements: the instances as parallel arrays."""
    return (
        [i.id for i in unique],
        [i.trigger_source for i in unique],
        [i.params for i in unique],
        [i.schedule for i in unique],
        [i.success_retention_ms for i in unique],
        [i.error_retention_ms for i in unique],
        [i.queued_data(version_id) for i in unique],
        [i.lease_owner for i in unique],
        [i.lease_expires for i in unique],
    )


def _first_duplicate(values: Sequence[str]) -> str:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    raise AssertionError("no duplicate")


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


class PostgresCreates:
    """``create_instances`` of ``PostgresStorage``."""

    _db: Database
    _creates: CreateBatcher
    _fire_wake: Callable[[], None]  # the store's Signals

    def _init_creates(self, origin: str | None) -> None:
        """``origin``: the payload of the creates' notification, None for none (portable)."""
        notifying = "" if origin is None else _NOTIFY_CREATED.format(origin=origin)
        self._create_once_sql = _CREATE_ONCE.replace(_NOTIFY_CREATED, notifying)
        self._create_instances_sql = _CREATE_INSTANCES.replace(_NOTIFY_CREATED, notifying)

    async def create_instances(
        self,
        workflow_pk: int,
        version_id: str,
        items: Sequence[NewInstance],
        now: int,
        *,
        skip_existing: bool,
    ) -> list[InstanceRecord]:
        return await self._creates.create(
            workflow_pk, version_id, items, now, skip_existing=skip_existing
        )

    async def _create_alone(
        self,
        workflow_pk: int,
        version_id: str,
        items: Sequence[NewInstance],
        now: int,
        skip_existing: bool,
    ) -> list[InstanceRecord]:
        first: dict[str, NewInstance] = {}
        for item in items:
            first.setdefault(item.id, item)
        unique = list(first.values())

        def check(pks: dict[str, int]) -> None:
            # A duplicate inside the request also counts as existing, as it does in SQLite.
            if not skip_existing and (len(pks) < len(items)):
                missing = [i.id for i in unique if i.id not in pks]
                taken = missing[0] if missing else _first_duplicate([i.id for i in items])
                raise InstanceAlreadyExists(f"Instance {taken!r} already exists")

        pks = None
        if not skip_existing and len(unique) == len(items):
            pks = await self._create_once(workflow_pk, version_id, unique, now)
        if pks is None:
            pks = await self._insert_instances(workflow_pk, version_id, unique, now, check)
        return [
            i.as_created(pks[i.id], workflow_pk, version_id, now) for i in unique if i.id in pks
        ]

    async def _create_once(
        self, workflow_pk: int, version_id: str, unique: Sequence[NewInstance], now: int
    ) -> dict[str, int] | None:
        """Create instances none of whose ids may exist yet in one round trip; None if one
        exists (nothing was stored: the transaction of ``_insert_instances`` then finds which
        and says so)."""
        ids = [i.id for i in unique]

        async def job(conn: Any, mark: uuid.UUID) -> dict[str, int]:
            rows = await conn.fetch(
                self._create_once_sql,
                workflow_pk,
                version_id,
                now,
                *_create_columns(version_id, unique),
                mark,
            )
            # A taken id fails the statement: no row means the version was not current.
            return {r[1]: r[0] for r in rows}

        async def recover(conn: Any) -> dict[str, int]:
            # It committed, so it created every one of them, or none if the version was old.
            rows = await conn.fetch(
                "SELECT pk, id FROM instances WHERE workflow_pk = $1 AND id = ANY($2::text[])",
                workflow_pk,
                ids,
            )
            return {r[1]: r[0] for r in rows}

        try:
            pks = await self._db.once(job, recover)
        except asyncpg.UniqueViolationError:
            return None
        if not pks and unique:
            raise WorkflowChanged(f"version {version_id!r} is not workflow {workflow_pk}'s own")
        if any(i.lease_owner is None for i in unique):
            self._fire_wake()
        return pks

    async def _insert_instances(
        self,
        workflow_pk: int,
        version_id: str,
        unique: Sequence[NewInstance],
        now: int,
        check: Callable[[dict[str, int]], None],
    ) -> dict[str, int]:
        """Insert instances whose ids are not taken; ``check`` sees ``{id: pk}`` of those
        inserted and rolls the transaction back by raising."""

        async def job(conn: Any) -> tuple[int | None, dict[str, int]]:
            rows = await conn.fetch(
                self._create_instances_sql,
                workflow_pk,
                version_id,
                now,
                *_create_columns(version_id, unique),
            )
            pks: dict[str, int] = {r[1]: r[0] for r in rows}
            if not pks and unique:
                # Every id taken, or the version not current: only the latter is an error.
                current = await conn.fetchval(
                    "SELECT version_id FROM workflows WHERE pk = $1", workflow_pk
                )
                if current != version_id:
                    raise WorkflowChanged(
                        f"version {version_id!r} is not workflow {workflow_pk}'s own"
                    )
            check(pks)
            return (rows[0][2] if rows else None), pks

        pks = await self._db.write_reporting_xid(job)
        if any(i.lease_owner is None and i.id in pks for i in unique):
            self._fire_wake()
        return pks
