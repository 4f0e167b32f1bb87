"""The portable PostgreSQL mode, ``postgresql+portable://``: for distributed SQL engines that speak
the PostgreSQL protocol (CockroachDB, YugabyteDB) but lack LISTEN/NOTIFY and advisory locks.

The URL chooses it rather than a probe of the server: what a server lacks shows only when a
statement fails, possibly in the middle of a transaction, and a plain PostgreSQL may be asked
for the mode too (to test it, or to keep notifications off a busy primary). What changes:

- Nothing notifies. No LISTEN connection is opened; the pool's connections are a class whose
  ``push_wakes`` is False, which every statement that notifies checks (``postgres_worker.notify``
  and ``notify_control``, ``postgres_children.unlink_deleted``); the create statement is sent
  in a variant without its ``pg_notify``; the release functions get a "near" horizon no
  wake-up is ever within (``NEVER_NEAR_MS``); and every connection starts with
  ``stepstone.notify = off``, which the child-ended trigger reads (migration 0016). Workers
  poll instead (``Worker._run``); control (terminate, pause, restart, delete) reaches a
  running instance at its next lease renewal.
- No advisory lock is taken. The three locks become row locks on ``stepstone_internal.locks``
  (migration 0016), held like the advisory locks until the transaction ends: an upsert of the
  lock's row locks it, whether or not the row existed (a second inserter of a new name waits
  on the first's unique key, then updates the row it committed).
- The migration lock needs its table before any migration has run: it is created first, in a
  statement of its own, with ``IF NOT EXISTS`` (concurrent starters racing on the catalog are
  told "duplicate", and try again once the winner committed). Migration 0016 creates it the
  same way, so a database migrated in either mode has it.

Every process sharing a database must use the same mode: advisory locks and row locks do not
exclude each other. Everything else stays as it is: commit marks settle lost commits in both
modes (no ``txid_status``), and the write functions and the triggers stay PL/pgSQL
(docs/scaling.md says what that leaves for CockroachDB).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

LOCKS = "stepstone_internal.locks"
# Each connection's setting, read by stepstone_wake_parent (migration 0016).
NO_NOTIFY = {"stepstone.notify": "off"}
# The release functions notify when the wake-up is before now plus this (an int8 either way).
NEVER_NEAR_MS = -(2**62)

_UPSERT = " ON CONFLICT (name) DO UPDATE SET name = excluded.name"
# The global claim lock of max_running.
CLAIM_ROW_LOCK = (f"INSERT INTO {LOCKS} (name) VALUES ('claim'){_UPSERT}",)
# The per-workflow claim locks of capped workflows, in the order of $1 (sorted), as the
# advisory ones are taken, so claimers cannot deadlock.
LOCK_CAP_ROWS = (
    f"INSERT INTO {LOCKS} (name) SELECT 'cap:' || k FROM unnest($1::bigint[])"
    f" WITH ORDINALITY AS t(k, n) ORDER BY n{_UPSERT}"
)
MIGRATION_LOCK = f"INSERT INTO {LOCKS} (name) VALUES ('migrate'){_UPSERT}"
_BOOTSTRAP = (
    "CREATE SCHEMA IF NOT EXISTS stepstone_internal;"
    f" CREATE TABLE IF NOT EXISTS {LOCKS} (name TEXT PRIMARY KEY)"
)
_RACED = (
    asyncpg.UniqueViolationError,
    asyncpg.exceptions.DuplicateSchemaError,
    asyncpg.exceptions.DuplicateTableError,
)


async def create_lock_table(conn: Any) -> None:
    """Make sure the lock table exists, outside any transaction (it must commit before the
    migrations' transaction can lock a row of it)."""
    for attempt in range(10):
        try:
            await conn.execute(_BOOTSTRAP)
            return
        except _RACED:
            # Another starter created it in the same instant: it exists once that commits.
            if attempt == 9:
                raise
            await asyncio.sleep(0.01 * (attempt + 1))
