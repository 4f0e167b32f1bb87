"""SQLite query plans of the worker's hot statements: a claim or a wake-up look reads the
runnable rows' index, never every instance a workflow ever had (which, through
instances_by_created, cost 25 ms per claim at 100,000 ended instances)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from stepstone.storage import open_storage
from stepstone.storage.base import NewInstance, WorkflowDefinition
from stepstone.storage.sqlite import SqliteStorage

NOW = 1_700_000_000_000


def plans(conn: sqlite3.Connection, statements: list[str]) -> list[str]:
    """The plan lines of each statement that reads ``instances`` (BEGIN/COMMIT skipped)."""
    lines = []
    for sql in statements:
        if "FROM instances" not in sql:
            continue
        for row in conn.execute("EXPLAIN QUERY PLAN " + sql):
            lines.append(f"{row[3]}  <-  {sql[:80]}")
    return lines


async def test_claims_and_wake_looks_read_the_runnable_index(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(storage, SqliteStorage)
    await storage.open()
    try:
        free = await storage.register_workflow(
            "acct", "free", WorkflowDefinition("Free", "shop"), NOW
        )
        capped = await storage.register_workflow(
            "acct", "capped", WorkflowDefinition("Capped", "shop", concurrency_limit=1), NOW
        )
        for workflow in (free, capped):
            await storage.create_instances(
                workflow.pk,
                workflow.version.id,
                [NewInstance(f"i{n}", b"{}") for n in range(3)],
                NOW,
                skip_existing=False,
            )
        conn = storage._write_conn
        assert conn is not None
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        try:
            scopes = ([free.pk], [free.pk, capped.pk], None)
            for scope in scopes:
                await storage.claim_runnable("w1", 1, NOW, 30_000, scope)
                storage._read(lambda c: c.set_trace_callback(statements.append))
                await storage.next_wake_at(scope)
        finally:
            conn.set_trace_callback(None)
            storage._read(lambda c: c.set_trace_callback(None))
        lines = plans(conn, statements)
        assert lines, "no statement on instances was seen"
        assert not [line for line in lines if "instances_by_created" in line], "\n".join(lines)
        assert not [line for line in lines if "SCAN instances" in line and "INDEX" not in line]
    finally:
        await storage.close()
