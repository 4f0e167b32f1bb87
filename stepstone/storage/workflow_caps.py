"""Per-workflow concurrency limits in the claim path (Cloudflare's ``concurrency.limit``).

A capped workflow's running instances are its live leases (a waiting, sleeping or paused
instance holds none, as on Cloudflare, where only ``running`` instances count). A claim gives a
capped workflow at most ``limit - live leases`` more, its oldest runnable instances first (woken
before new, as every claim orders them). Claims of one capped workflow are serialised: SQLite's
write transaction does it; PostgreSQL takes an advisory lock per capped workflow in a statement
of its own, so the counting statement that follows sees every claim committed before it.

Only the workflows row says which workflows are capped (``workflows.concurrency_limit``, the
current version's limit), so changing the limit applies from the next claim on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

# The advisory-lock class of per-workflow claim locks (the key is the workflow pk); any fixed
# 32-bit number distinct from the global claim lock's and the migrations'.
PG_CAP_LOCK_CLASS = 0x5735_CA9

# --- SQLite ----------------------------------------------------------------------------------


def sqlite_caps(conn: sqlite3.Connection, scope: Sequence[int] | None) -> dict[int, int]:
    """The capped workflows among ``scope`` (all when None): pk -> limit."""
    rows = conn.execute(
        "SELECT pk, concurrency_limit FROM workflows WHERE concurrency_limit IS NOT NULL"
    ).fetchall()
    wanted = None if scope is None else set(scope)
    return {int(pk): int(cap) for pk, cap in rows if wanted is None or pk in wanted}


def sqlite_running(conn: sqlite3.Connection, workflow_pk: int, now: int | None) -> int:
    """Live leases of one workflow (every lease when ``now`` is None), from the leased index."""
    if now is None:
        row = conn.execute(
            "SELECT count(*) FROM instances WHERE workflow_pk = ? AND lease_owner IS NOT NULL",
            (workflow_pk,),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT count(*) FROM instances WHERE workflow_pk = ? AND lease_owner IS NOT NULL"
            " AND lease_expires >= ?",
            (workflow_pk, now),
        ).fetchone()
    return int(row[0])


def sqlite_candidates(
    scope: Sequence[int] | None, caps: dict[int, int], rooms: dict[int, int], now: int, limit: int
) -> tuple[str, list[Any]]:
    """A ``SELECT pk`` of up to ``limit`` claimable rows: uncapped workflows' in the usual
    order, merged with at most ``rooms[pk]`` of each capped workflow's."""
    parts: list[str] = []
    args: list[Any] = []
    free = [pk for pk in scope if pk not in caps] if scope is not None else None
    if free is None or free:
        keys = list(caps) if free is None else free
        marks = ",".join("?" * len(keys))
        # Unary +: the runnable index, not every instance of the workflows (claim_runnable).
        where = f"+workflow_pk NOT IN ({marks})" if free is None else f"+workflow_pk IN ({marks})"
        parts.append(
            "SELECT * FROM (SELECT pk, priority, runnable_at FROM instances"
            " WHERE runnable_at <= ? AND (lease_expires IS NULL OR lease_expires < ?)"
            f" AND {where} ORDER BY priority, runnable_at LIMIT ?)"
        )
        args.extend([now, now, *keys, limit])
    for pk, room in rooms.items():
        if room <= 0:
            continue
        # Unleased rows from one index, expired leases from the other: a crashed worker's
        # instances come back under the same cap.
        parts.append(
            "SELECT * FROM (SELECT * FROM (SELECT pk, priority, runnable_at FROM instances"
            " WHERE workflow_pk = ? AND runnable_at <= ? AND lease_owner IS NULL"
            " ORDER BY priority, runnable_at LIMIT ?) UNION ALL SELECT * FROM"
            " (SELECT pk, priority, runnable_at FROM instances WHERE workflow_pk = ?"
            " AND lease_owner IS NOT NULL AND lease_expires < ? AND runnable_at <= ?"
            " ORDER BY priority, runnable_at LIMIT ?) ORDER BY 2, 3 LIMIT ?)"
        )
        cap = min(room, limit)
        args.extend([pk, now, cap, pk, now, now, cap, cap])
    if not parts:
        return "", []
    sql = f"SELECT pk FROM ({' UNION ALL '.join(parts)}) ORDER BY priority, runnable_at LIMIT ?"
    return sql, [*args, limit]


# --- PostgreSQL ------------------------------------------------------------------------------

# One lock per capped workflow, taken in the order of $1 (sorted) so claimers cannot deadlock.
PG_LOCK_CAPS = (
    f"SELECT pg_advisory_xact_lock({PG_CAP_LOCK_CLASS}, k::int) FROM unnest($1::bigint[]) AS k"
)


# A first activation's history (epoch 0 before this claim: no earlier holder can still be
# writing it), read by the claim statement itself: one round trip less for a new instance.
# A later activation reads it afresh after the claim, since its statement's snapshot could
# miss what the holder before it committed meanwhile.
_FIRST_HISTORY = (
    "CASE WHEN i.epoch = 1 THEN ARRAY(SELECT ROW(e.event_id, e.ts, e.type, e.step_kind,"
    " e.step_name, e.data) FROM instance_events e WHERE e.instance_pk = i.pk"
    " ORDER BY e.event_id) END"
)


def pg_claim_sql(returning: str) -> str:
    """One claim statement for workflows with and without a cap.

    $1 owner, $2 lease expiry, $3 now, $4 how many, $5 scope (NULL: every workflow), $6 the
    capped workflows whose locks this transaction holds (their instances are claimed up to
    their room, counted in this statement); instances of any other workflow capped at the
    statement's snapshot are left alone, so a limit set since the caller looked is not
    overshot. Answers the claimed rows, then a last row whose ``caps`` column lists the capped
    workflows in scope as this statement saw them (its ``ahead`` column is always NULL).
    """
    return (
        "WITH caps AS (SELECT pk, concurrency_limit AS cap FROM workflows"
        " WHERE concurrency_limit IS NOT NULL"
        " AND ($5::bigint[] IS NULL OR pk = ANY($5::bigint[]))),"
        " room AS (SELECT c.pk, c.cap - (SELECT count(*) FROM instances l"
        " WHERE l.workflow_pk = c.pk AND l.lease_owner IS NOT NULL AND l.lease_expires >= $3)"
        " AS n FROM caps c WHERE c.pk = ANY($6::bigint[])),"
        # No cap in scope: the one ordered scan claims always made (a one-time filter).
        " free AS (SELECT i.pk, i.priority, i.runnable_at FROM instances i"
        " WHERE i.runnable_at <= $3 AND (i.lease_expires IS NULL OR i.lease_expires < $3)"
        " AND ($5::bigint[] IS NULL OR i.workflow_pk = ANY($5::bigint[]))"
        " AND NOT EXISTS (SELECT 1 FROM caps)"
        " ORDER BY i.priority, i.runnable_at LIMIT $4 FOR UPDATE SKIP LOCKED),"
        # Caps in scope: that scan would walk past a capped workflow's whole backlog, so each
        # uncapped workflow is read from its own index range, expired leases from the leased
        # index.
        " open AS (SELECT w.pk FROM workflows w WHERE w.concurrency_limit IS NULL"
        " AND ($5::bigint[] IS NULL OR w.pk = ANY($5::bigint[])) AND EXISTS (SELECT 1 FROM caps)),"
        " free_each AS (SELECT x.pk, x.priority, x.runnable_at FROM open o CROSS JOIN LATERAL"
        " (SELECT i.pk, i.priority, i.runnable_at FROM instances i WHERE i.workflow_pk = o.pk"
        " AND i.runnable_at <= $3 AND i.lease_owner IS NULL ORDER BY i.priority, i.runnable_at"
        " LIMIT $4 FOR UPDATE OF i SKIP LOCKED) x),"
        " free_expired AS (SELECT i.pk, i.priority, i.runnable_at FROM instances i"
        " WHERE i.lease_owner IS NOT NULL AND i.lease_expires < $3 AND i.runnable_at <= $3"
        " AND i.workflow_pk = ANY(ARRAY(SELECT pk FROM open))"
        " ORDER BY i.priority, i.runnable_at LIMIT $4 FOR UPDATE SKIP LOCKED),"
        # The row locks come after the union (no FOR UPDATE in a UNION); the advisory locks
        # already keep other claimers off these workflows.
        " held AS (SELECT i.pk, i.priority, i.runnable_at FROM instances i WHERE i.pk IN"
        " (SELECT x.pk FROM room r CROSS JOIN LATERAL (SELECT y.pk FROM"
        " ((SELECT u.pk, u.priority, u.runnable_at FROM instances u WHERE u.workflow_pk = r.pk"
        " AND u.runnable_at <= $3 AND u.lease_owner IS NULL ORDER BY u.priority, u.runnable_at"
        " LIMIT least(greatest(r.n, 0), $4))"
        " UNION ALL (SELECT e.pk, e.priority, e.runnable_at FROM instances e"
        " WHERE e.workflow_pk = r.pk AND e.lease_owner IS NOT NULL AND e.lease_expires < $3"
        " AND e.runnable_at <= $3 ORDER BY e.priority, e.runnable_at"
        " LIMIT least(greatest(r.n, 0), $4))) y"
        " ORDER BY y.priority, y.runnable_at LIMIT least(greatest(r.n, 0), $4)) x)"
        " AND i.runnable_at <= $3 AND (i.lease_expires IS NULL OR i.lease_expires < $3)"
        " FOR UPDATE OF i SKIP LOCKED),"
        " picked AS (SELECT pk FROM (SELECT * FROM free UNION ALL SELECT * FROM free_each"
        " UNION ALL SELECT * FROM free_expired UNION ALL SELECT * FROM held) c"
        " ORDER BY priority, runnable_at LIMIT $4),"
        " claimed AS (UPDATE instances i SET lease_owner = $1, lease_expires = $2,"
        " epoch = i.epoch + 1, status = CASE WHEN i.status IN ('queued', 'waiting')"
        " THEN 'running' ELSE i.status END, started_on = COALESCE(i.started_on, $3),"
        f" modified_on = $3 FROM picked WHERE i.pk = picked.pk RETURNING {returning},"
        f" i.epoch, i.wake_seq, {_FIRST_HISTORY})"
        " SELECT claimed.*, NULL::bigint[] AS caps, txid_current() AS xid, NULL::bigint AS ahead"
        " FROM claimed UNION ALL SELECT claimed.*, ARRAY(SELECT pk FROM caps ORDER BY pk), NULL,"
        " NULL FROM (SELECT 1) one LEFT JOIN claimed ON false"
    )


def pg_plain_claim_sql(returning: str) -> str:
    """The claim while no capped workflow is known in scope: the ordered scan claims always
    made, skipped whole (a one-time filter) if a cap has appeared, so it can never overshoot
    one; its last row reports the capped workflows in scope, as ``pg_claim_sql``'s does, and in
    ``ahead`` the next wake-up among the instances left (NULL if none, or if a cap is in scope).
    Far smaller than that statement, so cheaper to plan ($1..$5 as there)."""
    return (
        "WITH caps AS (SELECT pk FROM workflows WHERE concurrency_limit IS NOT NULL"
        " AND ($5::bigint[] IS NULL OR pk = ANY($5::bigint[]))),"
        " picked AS (SELECT pk FROM instances WHERE runnable_at <= $3"
        " AND (lease_expires IS NULL OR lease_expires < $3)"
        " AND ($5::bigint[] IS NULL OR workflow_pk = ANY($5::bigint[]))"
        " AND NOT EXISTS (SELECT 1 FROM caps)"
        " ORDER BY priority, runnable_at LIMIT $4 FOR UPDATE SKIP LOCKED),"
        " claimed AS (UPDATE instances i SET lease_owner = $1, lease_expires = $2,"
        " epoch = i.epoch + 1, status = CASE WHEN i.status IN ('queued', 'waiting')"
        " THEN 'running' ELSE i.status END, started_on = COALESCE(i.started_on, $3),"
        f" modified_on = $3 FROM picked WHERE i.pk = picked.pk RETURNING {returning},"
        f" i.epoch, i.wake_seq, {_FIRST_HISTORY})"
        " SELECT claimed.*, NULL::bigint[] AS caps, txid_current() AS xid, NULL::bigint AS ahead"
        " FROM claimed UNION ALL SELECT claimed.*, ARRAY(SELECT pk FROM caps ORDER BY pk), NULL,"
        # What next_wake_at would answer once this claim commits (no cap in scope, so no
        # workflow is full): the earliest wake-up of the unleased instances it did not take.
        " (SELECT w.runnable_at FROM instances w WHERE w.runnable_at IS NOT NULL"
        " AND w.lease_owner IS NULL AND ($5::bigint[] IS NULL OR w.workflow_pk = ANY($5::bigint[]))"
        " AND w.pk <> ALL(ARRAY(SELECT pk FROM picked)) AND NOT EXISTS (SELECT 1 FROM caps)"
        " ORDER BY w.runnable_at LIMIT 1)"
        " FROM (SELECT 1) one LEFT JOIN claimed ON false"
    )
