#!/usr/bin/env python3
# ruff: noqa: RUF046, SIM105
# Copied from the project's shared bench folder and run unchanged: only its import lines and
# formatting were tidied for the repository's lint; the code as measured is kept as written.
"""Physical per-commit floor of SQLite on this disk.

Plain stdlib sqlite3, no ORM: N single-row INSERT + COMMIT transactions,
one fresh database file per configuration in a fresh temp dir (same
filesystem as the DBOS benchmark, which also uses tempfile).

Configurations:
  wal_normal  journal_mode=WAL,    synchronous=NORMAL  (fsync only at checkpoint)
  wal_full    journal_mode=WAL,    synchronous=FULL    (fsync of the WAL per commit)
  delete_full journal_mode=DELETE, synchronous=FULL    (sqlite3 default; what DBOS
              3.4.0 uses, since it sets no journal_mode pragma)
  wal_normal_batch  WAL/NORMAL, all N inserts in ONE transaction (upper bound when
              commits are batched/grouped)

Prints one JSON line per configuration:
  {"bench": "sqlite_floor", "config": ..., "n": N, "seconds": ..,
   "commits_per_s": .., "us_per_commit": .., "p50_us": .., "p99_us": ..}

Optional: --pg-url postgresql://postgres@127.0.0.1:55432/postgres also measures
the same loop against PostgreSQL over loopback with psycopg 3 (installed with
dbos), with synchronous_commit=on and =off, in a scratch table that is dropped.

Usage: python sqlite_floor.py [--n 1000] [--runs 1] [--dir DIR] [--pg-url URL]
"""

import argparse
import json
import os
import platform
import shutil
import sqlite3
import tempfile
import time

CONFIGS = [
    ("wal_normal", "WAL", "NORMAL", False),
    ("wal_full", "WAL", "FULL", False),
    ("delete_full", "DELETE", "FULL", False),
    ("wal_normal_batch", "WAL", "NORMAL", True),
]

PAYLOAD = json.dumps({"ok": True, "i": 0, "msg": "small step result"})


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def run_one(dirpath, name, journal, sync, batch, n):
    path = os.path.join(dirpath, f"floor_{name}.sqlite")
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    # isolation_level=None -> we issue BEGIN/COMMIT ourselves (explicit txns)
    conn = sqlite3.connect(path, isolation_level=None)
    got_journal = conn.execute(f"PRAGMA journal_mode={journal}").fetchone()[0]
    conn.execute(f"PRAGMA synchronous={sync}")
    got_sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    conn.execute(
        "CREATE TABLE steps (wf TEXT NOT NULL, fn_id INTEGER NOT NULL, "
        "output TEXT, created_at INTEGER, PRIMARY KEY (wf, fn_id))"
    )
    lat = []
    t0 = time.perf_counter()
    if batch:
        conn.execute("BEGIN IMMEDIATE")
        for i in range(n):
            conn.execute(
                "INSERT INTO steps VALUES (?, ?, ?, ?)", ("wf1", i, PAYLOAD, time.time_ns())
            )
        conn.execute("COMMIT")
    else:
        for i in range(n):
            s = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO steps VALUES (?, ?, ?, ?)", ("wf1", i, PAYLOAD, time.time_ns())
            )
            conn.execute("COMMIT")
            lat.append(time.perf_counter() - s)
    dt = time.perf_counter() - t0
    count = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
    assert count == n, count
    conn.close()
    lat.sort()
    return {
        "bench": "sqlite_floor",
        "config": name,
        "journal_mode": got_journal,
        "synchronous": got_sync,  # 1=NORMAL 2=FULL
        "n": n,
        "seconds": round(dt, 4),
        "commits_per_s": round((1 if batch else n) / dt, 1),
        "rows_per_s": round(n / dt, 1),
        "us_per_commit": round(dt / (1 if batch else n) * 1e6, 1),
        "us_per_row": round(dt / n * 1e6, 2),
        "p50_us": round(pct(lat, 50) * 1e6, 1) if lat else None,
        "p99_us": round(pct(lat, 99) * 1e6, 1) if lat else None,
    }


def run_pg(url, sync_commit, n):
    import psycopg  # lazy: only needed for the optional PG floor

    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"SET synchronous_commit = {sync_commit}")
        c.execute("DROP TABLE IF EXISTS floor_steps")
        c.execute(
            "CREATE TABLE floor_steps (wf TEXT NOT NULL, fn_id INTEGER NOT NULL, "
            "output TEXT, created_at BIGINT, PRIMARY KEY (wf, fn_id))"
        )
        lat = []
        t0 = time.perf_counter()
        for i in range(n):
            s = time.perf_counter()
            with c.transaction():
                c.execute(
                    "INSERT INTO floor_steps VALUES (%s, %s, %s, %s)",
                    ("wf1", i, PAYLOAD, time.time_ns()),
                )
            lat.append(time.perf_counter() - s)
        dt = time.perf_counter() - t0
        c.execute("DROP TABLE floor_steps")
    lat.sort()
    return {
        "bench": "pg_floor",
        "config": f"synchronous_commit={sync_commit}",
        "n": n,
        "seconds": round(dt, 4),
        "commits_per_s": round(n / dt, 1),
        "us_per_commit": round(dt / n * 1e6, 1),
        "p50_us": round(pct(lat, 50) * 1e6, 1),
        "p99_us": round(pct(lat, 99) * 1e6, 1),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--dir", default=None, help="parent dir for the temp dir (default: system tmp)")
    ap.add_argument("--pg-url", default=None, help="also measure PostgreSQL (optional)")
    a = ap.parse_args()
    print(
        json.dumps(
            {
                "bench": "env",
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
                "nproc": os.cpu_count(),
                "platform": platform.platform(),
            }
        ),
        flush=True,
    )
    d = tempfile.mkdtemp(prefix="sqlite_floor_", dir=a.dir)
    try:
        for r in range(a.runs):
            for name, journal, sync, batch in CONFIGS:
                res = run_one(d, name, journal, sync, batch, a.n)
                res["run"] = r
                print(json.dumps(res), flush=True)
            if a.pg_url:
                for sc in ("on", "off"):
                    res = run_pg(a.pg_url, sc, a.n)
                    res["run"] = r
                    print(json.dumps(res), flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
