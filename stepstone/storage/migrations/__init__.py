"""Numbered SQL migrations per dialect, applied in order and tracked in ``schema_version``."""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migration_files(dialect: str) -> list[tuple[int, str]]:
    """``(number, sql)`` for each migration of ``dialect``, in order; numbers have no gaps."""
    folder = resources.files("stepstone.storage.migrations").joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text()))
    found.sort()
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n: {numbers}")
    return found


def apply_sqlite_migrations(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in its own transaction; return the schema version."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    current = row[0] or 0
    for number, sql in migration_files("sqlite"):
        if number <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?)", (number,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        current = number
    return int(current)


def _statements(sql: str) -> list[str]:
    """Split a migration into statements; a trigger's body (``BEGIN ... END;``) stays whole.
    Migrations hold no string ';'."""
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    statements: list[str] = []
    pending = ""
    for piece in body.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip().removesuffix(";").strip())
            pending = ""
    if pending.strip(" \n;"):
        statements.append(pending.strip().removesuffix(";").strip())
    return [s for s in statements if s]
