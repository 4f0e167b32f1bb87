"""GET /metrics over real HTTP after real instances ran: the values, and who may scrape."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from stepstone.auth import create_token
from tests.api.conftest import ACCOUNT, LiveServer, start_server
from tests.observability.scrape import value

FLOWS = "tests.observability.flows"
N = 5


@pytest.fixture(params=["sqlite", "postgres"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    url = (
        f"sqlite:///{tmp_path / 'obs.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    server, stop = start_server(url)
    try:
        yield server
    finally:
        stop()


def register(live: LiveServer, class_name: str) -> str:
    name = f"obs-{uuid.uuid4().hex[:8]}"
    with live.http() as client:
        answer = client.put(
            f"/accounts/{ACCOUNT}/workflows/{name}",
            json={"class_name": class_name, "script_name": FLOWS},
        )
        assert answer.status_code == 200, answer.text
    return name


def scrape(live: LiveServer, token: str | None = "default") -> httpx.Response:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    if token == "default":
        headers["authorization"] = f"Bearer {live.token}"
    return httpx.get(f"{live.base}/metrics", headers=headers, timeout=30)


def test_counts_after_instances_ran(live: LiveServer) -> None:
    name = register(live, "FailsOnce")
    lag = "stepstone_wakeup_lag_seconds_count"
    # Read in process (the server runs in this one): a scrape now would take the store's
    # reading that the scrape below then serves.
    lags_before = REGISTRY.get_sample_value(lag) or 0.0
    with live.http() as client:
        for i in range(N):
            answer = client.post(
                f"/accounts/{ACCOUNT}/workflows/{name}/instances", json={"instance_id": f"i{i}"}
            )
            assert answer.status_code in (200, 201), answer.text
    for i in range(N):
        assert live.wait_done(name, f"i{i}")["status"] == "complete"
    answer = scrape(live)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert value(text, "stepstone_instances_created_total", workflow=name) == N
    assert value(text, "stepstone_instances_ended_total", workflow=name, status="complete") == N
    # flaky: one failed and one good attempt; after: one good attempt.
    attempts = "stepstone_step_attempt_seconds_count"
    assert value(text, attempts, workflow=name, outcome="error") == N
    assert value(text, attempts, workflow=name, outcome="success") == 2 * N
    assert value(text, "stepstone_step_retries_total", workflow=name) == N
    # Read from the store, not counted here.
    assert value(text, "stepstone_instances", workflow=name, status="complete") == N
    assert value(text, "stepstone_queue_depth", workflow=name) == 0
    route = "/client/v4/accounts/{account_id}/workflows/{workflow_name}/instances"
    created = [
        value(text, "stepstone_http_requests_total", method="POST", route=route, status=s)
        for s in ("200", "201")
    ]
    assert sum(created) >= N
    assert value(text, "stepstone_worker_slots_limit") >= 100
    assert value(text, "stepstone_activations_total", workflow=name) == 2 * N
    # Each instance: its first activation (from its creation) and the one its retry woke.
    assert value(text, lag) - lags_before == 2 * N
    store = "sqlite" if type(live.engine.storage).__name__.startswith("Sqlite") else "postgres"
    assert value(text, "stepstone_storage_commit_seconds_count", store=store) > 0
    assert value(text, "stepstone_group_commit_batch_size_count", store=store) > 0
    if store == "sqlite":
        assert value(text, "stepstone_storage_fsync_seconds_count") > 0


def test_terminated_and_waiting(live: LiveServer) -> None:
    name = register(live, "Waits")
    with live.http() as client:
        for i in range(2):
            client.post(
                f"/accounts/{ACCOUNT}/workflows/{name}/instances", json={"instance_id": f"w{i}"}
            ).raise_for_status()
        for i in range(2):
            live.wait_status(name, f"w{i}", {"waiting"})
        client.patch(
            f"/accounts/{ACCOUNT}/workflows/{name}/instances/w0/status",
            json={"status": "terminate"},
        ).raise_for_status()
        live.wait_status(name, "w0", {"terminated"})
    text = scrape(live).text
    assert value(text, "stepstone_instances_ended_total", workflow=name, status="terminated") == 1
    assert value(text, "stepstone_instances", workflow=name, status="waiting") == 1
    assert value(text, "stepstone_instances", workflow=name, status="terminated") == 1


def test_a_read_token_scrapes_others_are_refused(live: LiveServer) -> None:
    no_token = scrape(live, None)
    assert no_token.status_code == 401
    assert no_token.json()["success"] is False
    assert no_token.json()["errors"][0]["code"]
    assert scrape(live, "not-a-token").status_code in (401, 403)
    _, reader = live.run(
        create_token(
            live.engine.storage, name="scraper", permissions=["Workers Scripts Read"], accounts=None
        )
    )
    assert scrape(live, reader).status_code == 200
    # Not an API route: POST is refused, and the series are not in Cloudflare's OpenAPI.
    refused = httpx.post(
        f"{live.base}/metrics", headers={"authorization": f"Bearer {live.token}"}, timeout=30
    )
    assert refused.status_code == 405
    with live.http() as client:
        spec = client.get("/openapi.json").json()
    assert "/metrics" not in spec["paths"]
