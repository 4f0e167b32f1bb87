"""Migrations: applying every numbered file gives the declared schema, in both dialects.

``schema.json`` is the one declaration both dialects must match, after mapping column types to
int / text / bytes: so SQLite and PostgreSQL cannot drift apart, and a migration that changes
the schema must change the declaration in the same commit.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stepstone.storage import open_storage
from stepstone.storage.migrations import apply_sqlite_migrations, migration_files
from tests.conftest import pg_database_url, run_pg_admin

DECLARED = Path(__file__).with_name("schema.json")
TYPES = {
    "integer": "int",
    "bigint": "int",
    "text": "text",
    "blob": "bytes",
    "bytea": "bytes",
}
Schema = dict[str, Any]


def _table(columns: dict[str, list[Any]], keys: list[list[str]], indexes: dict[str, Any]) -> Any:
    return {
        "columns": {k: t + (" not null" if notnull else "") for k, (t, notnull) in columns.items()},
        "keys": sorted(keys),
        "indexes": dict(sorted(indexes.items())),
    }


def sqlite_schema(conn: sqlite3.Connection) -> Schema:
    schema: Schema = {}
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    for table in sorted(tables):
        info = conn.execute(f"PRAGMA table_info({table})").fetchall()
        pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
        columns = {r[1]: [TYPES[r[2].lower()], bool(r[3]) or r[1] in pk] for r in info}
        keys = [pk] if pk else []
        indexes = {}
        for _, name, unique, origin, partial in conn.execute(f"PRAGMA index_list({table})"):
            cols = [r[2] for r in conn.execute(f"PRAGMA index_info({name})")]
            if origin == "u":
                keys.append(cols)
            elif origin == "c":
                indexes[name] = {"columns": cols, "unique": bool(unique), "partial": bool(partial)}
        schema[table] = _table(columns, keys, indexes)
    return schema


async def postgres_schema(url: str) -> Schema:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        )
        keys = await conn.fetch(
            "SELECT t.relname, array_agg(a.attname ORDER BY k.ord) FROM pg_constraint c"
            " JOIN pg_class t ON t.oid = c.conrelid"
            " JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'"
            " CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY k(attnum, ord)"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum"
            " WHERE c.contype IN ('p', 'u') GROUP BY c.oid, t.relname"
        )
        indexes = await conn.fetch(
            "SELECT t.relname, i.relname, array_agg(a.attname ORDER BY k.ord), x.indisunique,"
            " x.indpred IS NOT NULL FROM pg_index x"
            " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
            " JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'"
            " CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY k(attnum, ord)"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum"
            " WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
            " GROUP BY t.relname, i.relname, x.indisunique, x.indpred"
        )
    finally:
        await conn.close()
    tables: dict[str, tuple[dict[str, list[Any]], list[list[str]], dict[str, Any]]] = {}
    for table, column, data_type, nullable in rows:
        tables.setdefault(table, ({}, [], {}))[0][column] = [
            TYPES[data_type],
            nullable == "NO",
        ]
    for table, cols in keys:
        tables[table][1].append(list(cols))
    for table, name, cols, unique, partial in indexes:
        tables[table][2][name] = {"columns": list(cols), "unique": unique, "partial": partial}
    return {name: _table(*parts) for name, parts in sorted(tables.items())}


def test_migrations_are_numbered_without_gaps() -> None:
    for dialect in ("sqlite", "postgres"):
        numbers = [n for n, _ in migration_files(dialect)]
        assert numbers == list(range(1, len(numbers) + 1)) and numbers


def test_sqlite_migrations_give_the_declared_schema(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db")
    version = apply_sqlite_migrations(conn)
    assert version == len(migration_files("sqlite"))
    assert apply_sqlite_migrations(conn) == version
    if os.environ.get("STEPSTONE_WRITE_SCHEMA"):
        DECLARED.write_text(json.dumps(sqlite_schema(conn), indent=2, sort_keys=True) + "\n")
    assert sqlite_schema(conn) == json.loads(DECLARED.read_text())


@pytest.fixture
def empty_pg_database() -> Iterator[str]:
    name = f"stepstone_m_{os.getpid()}"
    run_pg_admin(lambda c: c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    run_pg_admin(lambda c: c.execute(f"CREATE DATABASE {name}"))
    try:
        yield pg_database_url(name)
    finally:
        run_pg_admin(lambda c: c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def test_postgres_migrations_give_the_declared_schema(empty_pg_database: str) -> None:
    # Several processes starting at once on an empty database must not trip over each other.
    stores = [open_storage(empty_pg_database) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    for store in stores:
        await store.close()
    schema = await postgres_schema(empty_pg_database)
    versions = schema["schema_version"]
    assert versions["columns"] == {"version": "int not null"}
    assert schema == json.loads(DECLARED.read_text())

    import asyncpg

    conn = await asyncpg.connect(empty_pg_database)
    try:
        applied = [r[0] for r in await conn.fetch("SELECT version FROM schema_version")]
    finally:
        await conn.close()
    assert applied == [n for n, _ in migration_files("postgres")]
