"""Run the shared DBOS harness with chosen SQLite pragmas (runs in the DBOS venv).

DBOS 3.4.0 sets no ``journal_mode`` or ``synchronous`` pragma on its SQLite system database,
so it runs in SQLite's defaults (rollback journal DELETE, synchronous FULL). To compare like
with like against Stepstone's WAL modes, this wrapper adds a SQLAlchemy ``connect`` listener
that sets ``STEPSTONE_BENCH_JOURNAL`` / ``STEPSTONE_BENCH_SYNCHRONOUS`` on every SQLite
connection, then runs the harness unchanged:

    python bench/dbos_pragmas.py /path/to/dbos_bench.py --backend sqlite ...

Not imported by Stepstone; no dependency on it.
"""

import json
import os
import runpy
import sys
from typing import Any


def _install(journal: str, synchronous: str) -> None:
    """Set the pragmas on every SQLite connection; report what the first one ended with."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    reported = []

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        if "sqlite" not in type(dbapi_conn).__module__.lower():
            return
        cur = dbapi_conn.cursor()
        try:
            if journal:
                cur.execute(f"PRAGMA journal_mode={journal}")
            if synchronous:
                cur.execute(f"PRAGMA synchronous={synchronous}")
            if not reported:
                got_journal = cur.execute("PRAGMA journal_mode").fetchone()[0]
                got_sync = cur.execute("PRAGMA synchronous").fetchone()[0]
                reported.append(True)
                names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
                line = {
                    "bench": "dbos_sqlite_pragmas",
                    "journal_mode": str(got_journal).upper(),
                    "synchronous": names.get(got_sync, got_sync),
                }
                print(json.dumps(line), flush=True)
        finally:
            cur.close()


def main() -> None:
    harness = sys.argv[1]
    journal = os.environ.get("STEPSTONE_BENCH_JOURNAL", "")
    synchronous = os.environ.get("STEPSTONE_BENCH_SYNCHRONOUS", "")
    _install(journal, synchronous)
    sys.argv = [harness, *sys.argv[2:]]
    runpy.run_path(harness, run_name="__main__")


if __name__ == "__main__":
    main()
