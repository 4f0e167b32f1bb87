"""PostgreSQL store (scale-out): not implemented yet."""

from __future__ import annotations

from typing import Any


class PostgresStorage:
    def __init__(self, url: str) -> None:
        raise NotImplementedError(f"the PostgreSQL store is not available yet ({url})")

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(name)
