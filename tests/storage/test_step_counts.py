"""The instance summary and one step's events, on every backend: what the whole history's fold
says, read by index (the step count kept on the row by the database's triggers)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson

from stepstone.model import history as h
from stepstone.storage import open_storage
from stepstone.storage.base import InstanceSummary, NewEvent, Storage, Transition
from stepstone.storage.migrations import _statements, migration_files
from tests.conftest import pg_database_url, run_pg_admin
from tests.storage.conftest import NOW, Fixture


def _step(kind: str, name: str, ts: int, *types: str) -> list[NewEvent]:
    data = {
        "step_started": {"config": None},
        "attempt_started": {"attempt": 1},
        "attempt_completed": {"attempt": 1},
        "step_completed": {"output": name},
        "sleep_started": {"wakeAt": ts + 1000, "durationMs": 1000},
        "wait_started": {"deadline": ts + 1000, "eventType": "go"},
    }
    return [
        NewEvent(t, ts + n, orjson.dumps(data.get(t, {})), step_kind=kind, step_name=name)
        for n, t in enumerate(types)
    ]


DO_STEP = ("step_started", "attempt_started", "attempt_completed", "step_completed")


async def _summary(fx: Fixture, instance_id: str) -> InstanceSummary:
    exists, found = await fx.storage.get_instance_summary(
        fx.workflow.account_id, fx.workflow.name, instance_id
    )
    assert exists and found is not None
    record, summary = found
    assert record == await fx.get(instance_id)
    return summary


async def _folded(storage: Storage, pk: int) -> tuple[int, int | None, int | None, bool]:
    history = h.fold(await storage.load_events(pk))
    return (
        len(history.steps),
        history.queued_at,
        history.started_at,
        history.terminated_by is not None,
    )


async def _agrees(fx: Fixture, instance_id: str) -> InstanceSummary:
    summary = await _summary(fx, instance_id)
    record = await fx.get(instance_id)
    count, queued, started, terminated = await _folded(fx.storage, record.pk)
    assert summary.step_count == count
    assert summary.queued_at == queued
    if record.started_on is None:
        assert summary.started_at == started
    if record.status == "terminated":
        assert summary.terminated == terminated
    return summary


async def test_the_step_count_follows_every_write_and_every_removal(fx: Fixture) -> None:
    await fx.create("a")
    assert (await _agrees(fx, "a")).step_count == 0
    claim = await fx.claim_one("a")
    started = [NewEvent("workflow_started", NOW + 1, b"{}")]
    # One write holding several events of a new step, and of a step seen before, counts each once.
    await fx.storage.record_progress(claim, started + _step(h.DO, "s1", NOW + 2, *DO_STEP))
    await fx.storage.record_progress(claim, _step(h.DO, "s2", NOW + 10, *DO_STEP[:2]))
    await fx.storage.record_progress(claim, _step(h.DO, "s2", NOW + 20, *DO_STEP[2:]))
    await fx.storage.record_progress(claim, _step(h.SLEEP, "s2", NOW + 30, "sleep_started"))
    await fx.storage.record_progress(claim, _step(h.WAIT, "w", NOW + 40, "wait_started"))
    summary = await _agrees(fx, "a")
    assert summary == InstanceSummary(
        step_count=4, queued_at=NOW, started_at=None, terminated=False
    )
    record = await fx.get("a")
    events = await fx.storage.load_events(record.pk)
    # Dropping part of a step keeps it; dropping all of it (one statement, many rows) removes it.
    s1 = [e.event_id for e in events if e.step_name == "s1"]
    sleep = [e.event_id for e in events if e.step_kind == h.SLEEP]
    await fx.storage.transition_instance(
        record.pk, record.status, Transition(status=record.status, reset_history=s1[1:]), NOW + 50
    )
    assert (await _agrees(fx, "a")).step_count == 4
    await fx.storage.transition_instance(
        record.pk,
        record.status,
        Transition(status=record.status, reset_history=[s1[0], *sleep]),
        NOW + 51,
    )
    assert (await _agrees(fx, "a")).step_count == 2
    # A restart drops everything and starts over from a new workflow_queued.
    await fx.storage.transition_instance(
        record.pk,
        record.status,
        Transition(
            status="queued",
            reset_history=True,
            clear_outcome=True,
            release_worker=True,
            runnable=True,
            events=[NewEvent("workflow_queued", NOW + 60, b"{}")],
        ),
        NOW + 60,
    )
    assert await _agrees(fx, "a") == InstanceSummary(0, NOW + 60, None, False)


async def test_a_terminated_instance_counts_its_termination_and_others_are_apart(
    fx: Fixture, backend_url: str
) -> None:
    await fx.create("other", "t")
    t = await fx.get("t")
    await fx.storage.transition_instance(
        t.pk,
        "queued",
        Transition(
            status="terminated",
            ended=True,
            events=[
                *_step(h.DO, "x", NOW + 1, "step_started"),
                NewEvent("workflow_terminated", NOW + 2, b'{"trigger":{"source":"api"}}'),
            ],
        ),
        NOW + 2,
    )
    assert await _agrees(fx, "t") == InstanceSummary(1, NOW, None, True)
    assert await _agrees(fx, "other") == InstanceSummary(0, NOW, None, False)
    workflow = fx.workflow
    missing = await fx.storage.get_instance_summary(workflow.account_id, workflow.name, "missing")
    assert missing == (True, None)
    assert await fx.storage.get_instance_summary(workflow.account_id, "nope", "t") == (False, None)
    # Deleting an instance (events first, then the row) leaves the others' counts alone, and
    # takes its own: the next instance may be given its pk.
    assert await fx.storage.delete_instances(fx.workflow.pk, ["t"]) == ["t"]
    assert await _agrees(fx, "other") == InstanceSummary(0, NOW, None, False)
    await fx.create("next", now=NOW + 5)
    if backend_url.startswith("sqlite"):
        assert (await fx.get("next")).pk == t.pk  # SQLite gives the freed pk again
    assert await _agrees(fx, "next") == InstanceSummary(0, NOW + 5, None, False)


async def test_one_steps_events_by_name_and_kind(fx: Fixture) -> None:
    await fx.create("a")
    claim = await fx.claim_one("a")
    await fx.storage.record_progress(
        claim,
        [
            *_step(h.DO, "same", NOW + 1, *DO_STEP),
            *_step(h.DO, "else", NOW + 10, *DO_STEP),
            *_step(h.WAIT, "same", NOW + 20, "wait_started"),
            *_step(h.DO, "samey", NOW + 30, "step_started"),
        ],
    )
    pk = claim.instance.pk
    events = await fx.storage.load_events(pk)
    got = await fx.storage.load_step_events(pk, "same", (h.DO, h.WAIT, h.SLEEP))
    assert got == [e for e in events if e.step_name == "same"]
    assert [e.type for e in await fx.storage.load_step_events(pk, "same", (h.WAIT,))] == [
        "wait_started"
    ]
    assert await fx.storage.load_step_events(pk, "nothing", (h.DO,)) == []


_OLD_ROWS = [(None, None), ("do", "a"), ("do", "a"), ("do", "b"), ("sleep", "a"), (None, None)]
_OLD_WORKFLOW = (
    "INSERT INTO workflows (pk, account_id, name, id, version_id, created_on, modified_on)"
    " VALUES (1, 'acct', 'wf', 'w', 'v', 1, 1)"
)
_OLD_INSTANCE = (
    "INSERT INTO instances (pk, workflow_pk, id, version_id, status, trigger_source, params,"
    " created_on, modified_on) VALUES (7, 1, 'old', 'v', 'running', 'api', {params}, 1, 1)"
)


def _before_counts(dialect: str) -> list[tuple[int, str]]:
    """The migrations before the one that adds the step count."""
    files = migration_files(dialect)
    adds = next(n for n, sql in files if "instance_events_by_step" in sql)
    return [(n, sql) for n, sql in files if n < adds]


async def _count_after_opening(url: str) -> int:
    store = open_storage(url)
    await store.open()
    try:
        exists, found = await store.get_instance_summary("acct", "wf", "old")
        assert exists and found is not None
        return found[1].step_count
    finally:
        await store.close()


async def test_the_sqlite_migration_counts_the_steps_of_an_existing_database(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for number, sql in _before_counts("sqlite"):
        for statement in _statements(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?)", (number,))
    conn.execute(_OLD_WORKFLOW)
    conn.execute(_OLD_INSTANCE.format(params="x'7b7d'"))
    conn.executemany(
        "INSERT INTO instance_events (instance_pk, ts, type, step_kind, step_name)"
        " VALUES (7, 1, 'e', ?, ?)",
        _OLD_ROWS,
    )
    conn.close()
    assert await _count_after_opening(f"sqlite:///{path}") == 3


async def test_the_postgres_migration_counts_the_steps_of_an_existing_database() -> None:
    import asyncpg

    name = f"stepstone_counts_{os.getpid()}"
    run_pg_admin(lambda c: c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    run_pg_admin(lambda c: c.execute(f"CREATE DATABASE {name}"))
    url = pg_database_url(name)
    try:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            for number, sql in _before_counts("postgres"):
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_version VALUES ($1)", number)
            await conn.execute(_OLD_WORKFLOW)
            await conn.execute(_OLD_INSTANCE.format(params="'\\x7b7d'::bytea"))
            await conn.executemany(
                "INSERT INTO instance_events (instance_pk, ts, type, step_kind, step_name)"
                " VALUES (7, 1, 'e', $1, $2)",
                _OLD_ROWS,
            )
        finally:
            await conn.close()
        assert await _count_after_opening(url) == 3
    finally:
        run_pg_admin(lambda c: c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
