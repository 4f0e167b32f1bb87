"""Shared fixtures: every storage and engine scenario runs on each real backend.

``backend_url`` is parametrised over the in-memory store, a fresh SQLite file, and a fresh
PostgreSQL database (created from a migrated template for speed).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from stepstone.storage import open_storage
from stepstone.storage.base import Storage

PG_URL = os.environ.get("STEPSTONE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["memory", "sqlite"]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    kind = request.param
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'stepstone.db'}"
    else:  # pragma: no cover - filled in by the PostgreSQL fixture
        raise AssertionError(kind)


@pytest.fixture
async def storage(backend_url: str) -> AsyncIterator[Storage]:
    store = open_storage(backend_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
