"""What SQLite and PostgreSQL spell differently in the SQL the stores share.

Shared statements are written with ``?`` placeholders; a PostgreSQL session numbers them
(``$1``...). Everything else the two would write differently is a member here, so a third
dialect is this class and a ``Session``, not a fork of the operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Dialect:
    # Appended to a SELECT whose rows the transaction goes on to change: SQLite's one writer
    # holds the whole database already, PostgreSQL locks the rows.
    lock_rows: str
    # Appended to a SELECT picking one row of many for a claim: claimers skip each other's.
    skip_locked: str
    # Breaks ties between rows inserted in the same millisecond, later ones greater.
    insert_order: str
    # One value of many is one parameter, not a placeholder each (a statement of its own for
    # every length): an array on PostgreSQL, a JSON list on SQLite.
    arrays: bool
    # One step's events: SQLite is told the index, which it would otherwise pass over for the
    # ORDER BY's walk of the whole history by event id.
    by_step: str
    no_limit: int | None  # what LIMIT takes for "all"
    position: str  # where a text first holds another: (haystack, needle), 0 if nowhere
    # The text at a key of a JSON object stored as UTF-8 bytes: {column}, {key}.
    json_text_sql: str

    def one_of(
        self, column: str, values: Sequence[Any], args: list[Any], sql_type: str = "text"
    ) -> str:
        """``column`` equals one of ``values`` (not empty); their arguments join ``args``."""
        if self.arrays:
            args.append(list(values))
            return f"{column} = ANY(CAST(? AS {sql_type}[]))"
        args.append(orjson.dumps(list(values)).decode())
        return f"{column} IN (SELECT value FROM json_each(?))"

    def json_text(self, column: str, key: str) -> str:
        """The text at ``key`` of the JSON object stored as UTF-8 bytes in ``column``."""
        return self.json_text_sql.format(column=column, key=key)


SQLITE = Dialect(
    lock_rows="",
    skip_locked="",
    insert_order="rowid",
    arrays=False,
    by_step=" INDEXED BY instance_events_by_step",
    no_limit=-1,
    position="instr",
    json_text_sql="json_extract(CAST({column} AS TEXT), '$.{key}')",
)
POSTGRES = Dialect(
    lock_rows=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    # The inserting transaction's id, as SQLite's rowid grows with each insert.
    insert_order="xmin::text::bigint",
    arrays=True,
    by_step="",
    no_limit=None,
    position="strpos",
    json_text_sql="convert_from({column}, 'UTF8')::jsonb ->> '{key}'",
)
