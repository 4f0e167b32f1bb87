"""The in-memory store as the second model of the contract: the same seeded sequences of
operations on it and on a SQLite file must answer the same and leave the same state.

The contract suite checks chosen cases; this walks the states between them (claims racing
expiry, events delivered mid-activation, terminates of held instances, deletes, webhook
outbox rows). Identifiers the stores draw themselves (uuids, pks, event ids) are compared by
what they name, not by value. Owners only write with the claims they still hold: a write
after release is the one place the stores differ on purpose (memory and PostgreSQL fence on
the lease owner too; storage/memory_worker.py).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from stepstone.errors import CannotSendEvent, InstanceAlreadyExists
from stepstone.model.webhooks import AttemptLog, WebhookRecord
from stepstone.storage import open_storage
from stepstone.storage.base import (
    Claim,
    Conflict,
    EventRecord,
    Fenced,
    InstanceQuery,
    InstanceRecord,
    NewEvent,
    NewInstance,
    Release,
    Storage,
    Transition,
    WorkflowDefinition,
)
from stepstone.storage.memory import MemoryStorage
from stepstone.storage.sqlite import SqliteStorage
from tests.storage.conftest import NOW

IDS = [f"i{n}" for n in range(8)]
OWNERS = ("w1", "w2")
LEASE = 1_000
EXPECTED = (Fenced, Conflict, CannotSendEvent, InstanceAlreadyExists)


class Script:
    """One seeded run against one store: every answer goes into ``log``, normalised."""

    def __init__(self, store: Storage, seed: int, capped: bool, pks: bool) -> None:
        self.store = store
        self.pks = pks
        self.rng = random.Random(seed)
        self.capped = capped
        self.now = NOW
        self.log: list[Any] = []
        # The claims each owner holds, by instance id: dropped at release, as a worker does.
        self.held: dict[str, Claim] = {}
        self.workflow_pk = 0
        self.version_id = ""
        self.newest_pk = 0

    def _instance(self, r: InstanceRecord) -> tuple[Any, ...]:
        return (
            r.id,
            r.status,
            r.trigger_source,
            r.params,
            r.created_on,
            r.modified_on,
            r.started_on,
            r.ended_on,
            r.output,
            r.error,
            r.control,
            r.paused_at,
        )

    def _event(self, e: EventRecord) -> tuple[Any, ...]:
        data = None if e.data is None else e.data.replace(self.version_id.encode(), b"V")
        return (e.ts, e.type, e.step_kind, e.step_name, data)

    async def setup(self) -> None:
        limit = 2 if self.capped else None
        workflow = await self.store.register_workflow(
            "acct", "wf", WorkflowDefinition("C", "m", concurrency_limit=limit), NOW
        )
        self.workflow_pk, self.version_id = workflow.pk, workflow.version.id
        # PostgreSQL leaves a workflow capped since its last claim alone for one claim (it
        # locks it from the next on): "up to limit" allows that, and this claim takes it.
        assert await self.store.claim_runnable("w0", 1, NOW, LEASE, [workflow.pk]) == []
        events = ("errored", "complete", "terminated", "paused", "rolledBack")
        hooks = [
            WebhookRecord("h1", "http://x", events, "s"),
            WebhookRecord("h2", "http://y", ("waitingForEvent", "complete"), "t", 300),
        ]
        await self.store.put_webhooks(workflow.pk, hooks, replace_source=None)

    async def _pk(self, instance_id: str) -> InstanceRecord | None:
        return await self.store.get_instance(self.workflow_pk, instance_id)

    def _claim(self) -> Claim | None:
        if not self.held:
            return None
        return self.held[self.rng.choice(sorted(self.held))]

    # --- operations (each returns what is logged) -------------------------------------------

    async def op_create(self) -> Any:
        # One at a time: instances made runnable at one instant are claimed in an order the
        # contract leaves open (SQLite's follows whichever index it reads), so none are.
        instance_id = self.rng.choice(IDS)
        items = [NewInstance(instance_id, orjson.dumps({"n": instance_id}))]
        created = await self.store.create_instances(
            self.workflow_pk,
            self.version_id,
            items,
            self.now,
            skip_existing=self.rng.random() < 0.7,
        )
        self.newest_pk = max([self.newest_pk, *(r.pk for r in created)])
        return [(r.pk if self.pks else None, *self._instance(r)) for r in created]

    async def op_tick(self) -> Any:
        self.now += self.rng.choice([0, 10, 400, 1_500])
        return self.now

    async def op_claim(self) -> Any:
        owner = self.rng.choice(OWNERS)
        max_running = self.rng.choice([None, None, 3])
        claims = await self.store.claim_runnable(
            owner,
            self.rng.randint(1, 3),
            self.now,
            LEASE,
            [self.workflow_pk],
            max_running=max_running,
        )
        for c in claims:
            self.held[c.instance.id] = c
        return [(c.owner, self._instance(c.instance)) for c in claims]

    async def op_progress(self) -> Any:
        claim = self._claim()
        if claim is None:
            return None
        step = f"s{self.rng.randint(0, 3)}"
        events = [NewEvent("step_started", self.now, b"{}", "do", step)]
        return await self.store.record_progress(claim, events)

    async def op_release(self) -> Any:
        claim = self._claim()
        if claim is None:
            return None
        del self.held[claim.instance.id]
        status, at = self.rng.choice(
            [("waiting", self.now + 51), ("waiting", None), ("complete", None), ("errored", None)]
        )
        output = b'"done"' if status == "complete" else None
        error = b'{"name":"Boom","message":"x"}' if status == "errored" else None
        release = Release(
            status, at, output, error, events=[NewEvent("activation_ended", self.now)]
        )
        return await self.store.release_instance(claim, release, self.now)

    async def op_deliver(self) -> Any:
        listed = await self.store.list_instances(self.workflow_pk, InstanceQuery(limit=100))
        if not listed:
            return None
        held = [r for r in listed if r.id in self.held]
        # Half of them to a held instance: what a wait in progress consumes.
        pool = held if held and self.rng.random() < 0.5 else listed
        found = self.rng.choice(sorted(pool, key=lambda r: r.id))
        payload = orjson.dumps({"k": self.rng.randint(0, 2)})
        return await self.store.deliver_event(found.pk, "go", payload, self.now)

    async def op_consume(self) -> Any:
        claim = self._claim()
        if claim is None:
            return None
        match = self.rng.choice([None, {"k": 1}])
        done = NewEvent("wait_complete", self.now, b'{"a":1}', "wait", "w")
        got = await self.store.consume_event(claim, "go", done, match)
        return None if got is None else (got.type, got.payload, got.ts)

    async def op_terminate(self) -> Any:
        found = await self._pk(self.rng.choice(IDS))
        if found is None:
            return None
        expected = self.rng.choice([found.status, "running"])
        transition = Transition(
            "terminated",
            release_worker=True,
            ended=True,
            events=[NewEvent("workflow_terminated", self.now)],
            closing=lambda log: [NewEvent("closed", self.now, orjson.dumps(len(log)))],
        )
        await self.store.transition_instance(found.pk, expected, transition, self.now)
        return expected

    async def op_restart(self) -> Any:
        found = await self._pk(self.rng.choice(IDS))
        if found is None:
            return None
        transition = Transition(
            "queued",
            runnable=True,
            release_worker=True,
            reset_history=True,
            reset_streams=True,
            clear_outcome=True,
            keep_pending=self.rng.random() < 0.5,
            events=[NewEvent("workflow_queued", self.now)],
        )
        await self.store.transition_instance(found.pk, found.status, transition, self.now)
        return found.status

    async def op_rollback(self) -> Any:
        claim = self._claim()
        if claim is None:
            return None
        await self.store.set_active_status(claim, "rollingBack")
        return True

    async def op_delete(self) -> Any:
        found = await self._pk(self.rng.choice(IDS))
        if found is None or found.pk == self.newest_pk:
            # SQLite would give the next instance this pk again, and the models' pks would differ.
            return None
        return await self.store.delete_instances(self.workflow_pk, [found.id])

    async def op_expire(self) -> Any:
        return await self.store.expire_leases(None, self.now)

    async def op_renew(self) -> Any:
        owner = self.rng.choice(OWNERS)
        claims = [c for c in self.held.values() if c.owner == owner]
        renewed = await self.store.renew_leases(owner, claims, self.now, LEASE)
        by_id = {c.instance.pk: c.instance.id for c in claims}
        return sorted((by_id[pk], status) for pk, status in renewed.items())

    async def op_wait(self) -> Any:
        claim = self._claim()
        if claim is None:
            return None
        started = NewEvent("wait_started", self.now, b"{}", "wait", f"w{self.rng.randint(0, 1)}")
        return await self.store.record_progress(claim, [started])

    async def op_link(self) -> Any:
        claim = self._claim()
        child = await self._pk(self.rng.choice(IDS))
        if claim is None or child is None or child.id == claim.instance.id:
            return None
        detached = self.rng.random() < 0.3
        return await self.store.link_child(claim, child.pk, detached=detached)

    async def op_overdue(self) -> Any:
        return await self.store.enqueue_overdue_waits(self.now)

    async def op_deliveries(self) -> Any:
        owner = self.rng.choice(OWNERS)
        # All that are due: of the notices one change queues, the SQL stores order their rows
        # differently (SQLite by notice, then hook; PostgreSQL by hook), which the contract
        # leaves open, so which of them a smaller limit takes is too.
        jobs = await self.store.claim_deliveries(owner, self.now, 500, 100)
        jobs.sort(key=lambda j: (j.hook_id, j.instance_id, j.event, j.at))
        done = []
        for job in jobs:
            delivered = self.rng.random() < 0.5
            retry_at = None if delivered or self.rng.random() < 0.5 else self.now + 101
            attempt = AttemptLog(self.now, 5, 200 if delivered else 500, None)
            finished = await self.store.finish_delivery(
                job.pk, owner, attempt, delivered=delivered, retry_at=retry_at
            )
            done.append((job.hook_id, job.instance_id, job.event, job.at, job.attempts, finished))
        return done

    async def op_look(self) -> Any:
        return (
            await self.store.next_wake_at([self.workflow_pk]),
            await self.store.concurrency_usage(self.workflow_pk, self.now),
            await self.store.count_instances(self.workflow_pk),
        )

    async def step(self) -> None:
        ops: list[Callable[[], Awaitable[Any]]] = [
            self.op_create,
            self.op_tick,
            self.op_tick,
            self.op_claim,
            self.op_claim,
            self.op_progress,
            self.op_release,
            self.op_release,
            self.op_deliver,
            self.op_deliver,
            self.op_consume,
            self.op_consume,
            self.op_consume,
            self.op_terminate,
            self.op_restart,
            self.op_rollback,
            self.op_delete,
            self.op_expire,
            self.op_renew,
            self.op_look,
            self.op_wait,
            self.op_wait,
            self.op_link,
            self.op_link,
            self.op_overdue,
            self.op_deliveries,
        ]
        op = self.rng.choice(ops)
        # Even instants for what each step makes runnable now, odd ones for later wakes: no
        # two rows are ever runnable from the same instant (see op_create).
        self.now += 2
        try:
            self.log.append((op.__name__, await op()))
        except EXPECTED as exc:
            self.log.append((op.__name__, type(exc).__name__))

    async def state(self) -> Any:
        """Everything a reader can see of the workflow at the end."""
        records = await self.store.list_instances(
            self.workflow_pk, InstanceQuery(ascending=True, limit=100)
        )
        histories = {
            r.id: [self._event(e) for e in await self.store.load_events(r.pk)] for r in records
        }
        summaries = [
            (await self.store.get_instance_summary("acct", "wf", r.id))[1] for r in records
        ]
        deliveries = await self.store.list_deliveries(self.workflow_pk, None, None, 1_000)
        links = {r.id: await self.store.instance_links(r.pk) for r in records}
        return (
            [self._instance(r) for r in records],
            histories,
            [None if s is None else s[1] for s in summaries],
            sorted(
                (d.hook_id, d.instance_id, d.event, d.at, d.state, d.attempts, d.log)
                for d in deliveries
            ),
            links,
            await self.store.delete_expired(self.now + 10**12, 1_000),
        )


async def run(
    store: Storage, seed: int, capped: bool, steps: int, *, pks: bool = True
) -> tuple[list[Any], Any]:
    await store.open()
    try:
        script = Script(store, seed, capped, pks)
        await script.setup()
        for _ in range(steps):
            await script.step()
        return script.log, await script.state()
    finally:
        await store.close()


def agree(mine: tuple[list[Any], Any], theirs: tuple[list[Any], Any], other: str) -> None:
    for n, (a, b) in enumerate(zip(mine[0], theirs[0], strict=True)):
        assert a == b, f"step {n}: memory {a!r}, {other} {b!r}"
    assert mine[1] == theirs[1]
    # The sequence did reach the states it is there for.
    seen = {name for name, result in mine[0] if result not in (None, [], "Fenced", "Conflict")}
    assert {"op_claim", "op_release", "op_consume", "op_terminate", "op_link"} <= seen


@pytest.mark.parametrize("capped", [False, True], ids=["uncapped", "capped"])
@pytest.mark.parametrize("seed", range(12))
async def test_memory_and_sqlite_agree_step_by_step(
    tmp_path: Path, seed: int, capped: bool
) -> None:
    memory = open_storage("memory://")
    sqlite = open_storage(f"sqlite:///{tmp_path / 'model.db'}")
    assert isinstance(memory, MemoryStorage) and isinstance(sqlite, SqliteStorage)
    mine = await run(memory, seed, capped, 400)
    agree(mine, await run(sqlite, seed, capped, 400), "sqlite")


@pytest.mark.parametrize("capped", [False, True], ids=["uncapped", "capped"])
@pytest.mark.parametrize("seed", range(3))
async def test_memory_and_postgres_agree_step_by_step(
    pg_database: str, seed: int, capped: bool
) -> None:
    # PostgreSQL draws pks from sequences that skipped creates use up: they are left out.
    memory = await run(open_storage("memory://"), seed, capped, 400, pks=False)
    agree(memory, await run(open_storage(pg_database), seed, capped, 400, pks=False), "postgres")
