"""The 2026 retention default: new workflows keep ended instances 7 days, workflows that existed
before the upgrade keep their 30, account settings override both; and jurisdiction is stored,
returned and immutable (10209)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, TypedDict

import asyncpg
import pytest

from stepstone import Engine
from stepstone.errors import InvalidWorkflowDefinition, JurisdictionImmutable
from stepstone.model.retention import DEFAULT_RETENTION_MS, LEGACY_DEFAULT_RETENTION_MS
from stepstone.ops import Operations
from stepstone.storage import open_storage
from stepstone.storage.base import Storage
from stepstone.storage.migrations import migration_files
from tests.engine import flows
from tests.storage.test_migrations import empty_pg_database  # noqa: F401 (a fixture)

MINUTE = 60_000
SCRIPT = "tests.engine.flows"


async def _ended_at(ops: Operations, workflow: str, instance_id: str) -> int:
    await ops.create_instances("default", workflow, [_req(instance_id)], skip_existing=False)
    before = int(time.time() * 1000)
    await ops.terminate("default", workflow, instance_id)
    return before


def _req(instance_id: str) -> Any:
    from stepstone.ops import CreateRequest

    return CreateRequest(id=instance_id)


async def _kept(storage: Storage, ended: int, retention: int) -> tuple[int, int]:
    """How many instances a sweep just before, then just after ``retention`` deletes."""
    early = await storage.delete_expired(ended + retention - MINUTE, 100)
    late = await storage.delete_expired(ended + retention + MINUTE, 100)
    return early, late


def test_the_default_is_seven_days_and_older_workflows_kept_thirty() -> None:
    assert DEFAULT_RETENTION_MS == 7 * 86_400_000
    assert LEGACY_DEFAULT_RETENTION_MS == 30 * 86_400_000
    for dialect in ("sqlite", "postgres"):
        sql = dict(migration_files(dialect))
        assert any(f"= {LEGACY_DEFAULT_RETENTION_MS}" in text for text in sql.values())


async def test_a_new_workflow_keeps_ended_instances_seven_days(backend_url: str) -> None:
    engine = await Engine.open(backend_url, run_worker=True)
    try:
        await engine.register("seq", flows.Sequential)
        before = int(time.time() * 1000)
        handle = await engine.workflow("seq").create(id="done", params={"n": 1})
        await handle.wait(10)
        # The worker's release (PostgreSQL: stepstone_release) computed it.
        assert await _kept(engine.storage, before, DEFAULT_RETENTION_MS) == (0, 1)
    finally:
        await engine.close()


async def test_terminated_and_account_overrides(storage: Storage) -> None:
    # No worker: nothing else holds the rows the sweep deletes.
    ops = Operations(storage)
    await ops.put_workflow("default", "seq", class_name="Sequential", script_name=SCRIPT)
    ended = await _ended_at(ops, "seq", "stopped")
    assert await _kept(storage, ended, DEFAULT_RETENTION_MS) == (0, 1)
    await storage.put_account_settings("default", 2 * 86_400_000, 3 * 86_400_000)
    ended = await _ended_at(ops, "seq", "by-account")
    assert await _kept(storage, ended, 3 * 86_400_000) == (0, 1)


def _legacy_sqlite(path: Path) -> None:
    """A database as the release before this change left it: migrations up to 0003."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for number, text in migration_files("sqlite"):
        if number > 3:
            break
        conn.executescript(text)
        conn.execute("INSERT INTO schema_version VALUES (?)", (number,))
    _insert_legacy_workflow(conn.execute)
    conn.commit()
    conn.close()


def _insert_legacy_workflow(execute: Any) -> None:
    execute(
        "INSERT INTO workflows (pk, account_id, name, id, version_id, created_on, modified_on)"
        " VALUES (1, 'default', 'old', 'w-old', 'v-old', 0, 0)"
    )
    execute(
        "INSERT INTO versions (id, workflow_pk, class_name, script_name, created_on,"
        f" schedules, language) VALUES ('v-old', 1, 'Sequential', '{SCRIPT}', 0, '[]', 'python')"
    )


async def _check_upgrade(url: str) -> None:
    storage = open_storage(url)
    await storage.open()
    try:
        ops = Operations(storage)
        old = await ops.workflow("default", "old")
        assert old.retention_fallback_ms == LEGACY_DEFAULT_RETENTION_MS
        await ops.put_workflow("default", "new", class_name="Sequential", script_name=SCRIPT)
        # A new version of an existing workflow is still that workflow: 30 days.
        await ops.put_workflow("default", "old", class_name="Sequential", script_name=SCRIPT)
        ended = await _ended_at(ops, "old", "o1")
        assert await _kept(storage, ended, LEGACY_DEFAULT_RETENTION_MS) == (0, 1)
        ended = await _ended_at(ops, "new", "n1")
        assert await _kept(storage, ended, DEFAULT_RETENTION_MS) == (0, 1)
        # The account's settings override the old workflow's 30 days too.
        await storage.put_account_settings("default", None, 86_400_000)
        ended = await _ended_at(ops, "old", "o2")
        assert await _kept(storage, ended, 86_400_000) == (0, 1)
    finally:
        await storage.close()


async def test_sqlite_upgrade_keeps_existing_workflows_retention(tmp_path: Path) -> None:
    _legacy_sqlite(tmp_path / "old.db")
    await _check_upgrade(f"sqlite:///{tmp_path / 'old.db'}")


async def test_postgres_upgrade_keeps_existing_workflows_retention(
    empty_pg_database: str,  # noqa: F811
) -> None:
    conn = await asyncpg.connect(empty_pg_database)
    try:
        await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for number, text in migration_files("postgres"):
            if number > 7:
                break
            await conn.execute(text)
            await conn.execute("INSERT INTO schema_version VALUES ($1)", number)

        async def execute(sql: str) -> None:
            await conn.execute(sql.replace("'[]'", "'[]'::bytea"))

        await execute(
            "INSERT INTO workflows (pk, account_id, name, id, version_id, created_on,"
            " modified_on) VALUES (1, 'default', 'old', 'w-old', 'v-old', 0, 0)"
        )
        await execute(
            "INSERT INTO versions (id, workflow_pk, class_name, script_name, created_on,"
            f" schedules, language) VALUES ('v-old', 1, 'Sequential', '{SCRIPT}', 0, '[]',"
            " 'python')"
        )
        await conn.execute("SELECT setval(pg_get_serial_sequence('workflows', 'pk'), 1)")
    finally:
        await conn.close()
    await _check_upgrade(empty_pg_database)


class PutWorkflow(TypedDict):
    class_name: str
    script_name: str


async def test_jurisdiction_is_stored_and_immutable(storage: Storage) -> None:
    ops = Operations(storage)
    put = PutWorkflow(class_name="Sequential", script_name=SCRIPT)
    assert (await ops.put_workflow("default", "j", **put)).jurisdiction is None
    assert (await ops.put_workflow("default", "j", **put, jurisdiction="eu")).jurisdiction == "eu"
    # A deploy that names none keeps it; one naming the same is fine.
    assert (await ops.put_workflow("default", "j", **put)).jurisdiction == "eu"
    assert (await ops.put_workflow("default", "j", **put, jurisdiction="eu")).jurisdiction == "eu"
    versions_before = (await storage.list_versions((await ops.workflow("default", "j")).pk, 0, 99))[
        1
    ]
    with pytest.raises(JurisdictionImmutable) as caught:
        await ops.put_workflow("default", "j", **put, jurisdiction="us")
    assert caught.value.code == 10209
    # The refused registration added no version.
    workflow = await ops.workflow("default", "j")
    assert workflow.jurisdiction == "eu"
    assert (await storage.list_versions(workflow.pk, 0, 99))[1] == versions_before
    with pytest.raises(InvalidWorkflowDefinition):
        await ops.put_workflow("default", "k", **put, jurisdiction="mars")
    created = await ops.put_workflow("default", "f", **put, jurisdiction="fedramp")
    assert created.jurisdiction == "fedramp"
