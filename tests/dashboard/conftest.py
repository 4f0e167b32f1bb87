"""A live server (the API's test server) with the dashboard's workflows, and signed-in clients.

``dash`` runs on each of the API suite's ``SERVER_BACKENDS`` (the pages read what the store
holds); ``dash_sqlite`` is for tests about the pages' own logic (form redirects), where a
second backend would add a server start and prove nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from stepstone.auth import SCRIPTS_READ, create_token
from tests.api.conftest import ACCOUNT, LiveServer, server_db_url, start_server
from tests.dashboard.flows import Journey, Waiter

__all__ = ["ACCOUNT", "LiveServer", "server_db_url"]
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def prepare(live: LiveServer) -> LiveServer:
    live.run(live.engine.register("journey", Journey))
    live.run(live.engine.register("waiter", Waiter))
    live.run(live.engine.register("nightly", Waiter, schedules=["0 2 * * *", "30 */6 * * 1-5"]))
    _, read_only = live.run(
        create_token(live.engine.storage, name="viewer", permissions=[SCRIPTS_READ], accounts=None)
    )
    live.extra["read_only"] = read_only
    return live


def browser_client(live: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=live.base, follow_redirects=False, timeout=30)


@contextmanager
def sign_in(live: LiveServer, token: str) -> Iterator[httpx.Client]:
    """A client holding a dashboard session for ``token``."""
    with browser_client(live) as client:
        form = client.get("/dashboard/login")
        answer = client.post(
            "/dashboard/login",
            data={"token": token, "csrf": csrf_of(form.text), "next": "/dashboard/workflows"},
        )
        assert answer.status_code == 303, answer.text
        yield client


@pytest.fixture
def dash(server_db_url: str) -> Iterator[LiveServer]:
    live, stop = start_server(server_db_url)
    try:
        yield prepare(live)
    finally:
        stop()


@pytest.fixture
def dash_sqlite(tmp_path: Path) -> Iterator[LiveServer]:
    live, stop = start_server(f"sqlite:///{tmp_path / 'dash.db'}")
    try:
        yield prepare(live)
    finally:
        stop()
