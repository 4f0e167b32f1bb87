"""Open a store from a database URL; the dialect's module is imported only when used.

URLs follow the SQLAlchemy convention: ``sqlite:///relative/path.db``,
``sqlite:////absolute/path.db``, ``sqlite:///path.db?synchronous=NORMAL``, ``memory://`` (the
plain-Python store, ``memory.py``; ``sqlite:///:memory:`` is SQLite in memory) and
``postgresql://user@host:port/dbname``, or with several hosts for failover,
``postgresql://user@h1:5432,h2:5433/dbname?target_session_attrs=read-write``
(``postgres_hosts``). ``postgresql+portable://...`` is PostgreSQL without LISTEN/NOTIFY and
advisory locks, for CockroachDB or YugabyteDB (``postgres_portable``): a dialect suffix, as
SQLAlchemy's ``postgresql+asyncpg://`` names a driver, stripped before connecting.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from stepstone.storage.base import Storage


class InvalidDatabaseURL(ValueError):
    """The database URL cannot be understood."""


_EXAMPLES = (
    "sqlite:///stepstone.db, sqlite:////abs/path.db, memory://, postgresql://host/db,"
    " postgresql+portable://host/db"
)


def open_storage(url: str) -> Storage:
    """Build (but do not connect) the store that ``url`` names."""
    if not url or "://" not in url:
        raise InvalidDatabaseURL(f"{url!r} is not a database URL; examples: {_EXAMPLES}")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from stepstone.storage.memory import MemoryStorage

        return MemoryStorage(url)
    if scheme == "sqlite":
        from stepstone.storage.sqlite import SqliteStorage

        parts = urlsplit(url)
        if parts.netloc:
            raise InvalidDatabaseURL(
                f"{url!r}: a SQLite URL has no host; use sqlite:///relative.db or"
                " sqlite:////absolute.db"
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise InvalidDatabaseURL(f"{url!r} names no file; e.g. sqlite:///stepstone.db")
        if path == ":memory:":
            return SqliteStorage(url, None)
        options = parse_qs(parts.query)
        unknown = set(options) - {"synchronous"}
        if unknown:
            raise InvalidDatabaseURL(f"{url!r}: unknown options {sorted(unknown)}")
        synchronous = options.get("synchronous", ["FULL"])[-1].upper()
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise InvalidDatabaseURL(f"{url!r}: synchronous must be FULL, NORMAL or EXTRA")
        return SqliteStorage(url, path, synchronous)
    if scheme in ("postgresql", "postgres", "postgresql+portable", "postgres+portable"):
        from stepstone.storage.postgres import PostgresStorage
        from stepstone.storage.postgres_hosts import InvalidPostgresURL, postgres_dsn

        portable = scheme.endswith("+portable")
        dsn = "postgresql://" + url.split("://", 1)[1] if portable else url
        try:
            return PostgresStorage(postgres_dsn(dsn), portable=portable)
        except InvalidPostgresURL as exc:
            raise InvalidDatabaseURL(str(exc)) from None
    raise InvalidDatabaseURL(f"unsupported database URL scheme {scheme!r}; examples: {_EXAMPLES}")


__all__ = ["InvalidDatabaseURL", "Storage", "open_storage"]
