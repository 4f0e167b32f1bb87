"""Subscribe tokens (issue 13): a short-lived credential that opens one instance's event stream
without the API token, so a browser's EventSource can subscribe without holding one."""

from __future__ import annotations

import time

from stepstone.web.common import subscribe_token
from tests.dashboard.conftest import ACCOUNT, LiveServer
from tests.dashboard.test_subscribe import all_events, url

UNAUTHORIZED = 10003


def _mint(live: LiveServer, instance: str) -> dict[str, str]:
    with live.http() as client:
        answer = client.get(url("waiter", instance) + "/token")
    assert answer.status_code == 200, answer.text
    result: dict[str, str] = answer.json()["result"]
    return result


def _refused(live: LiveServer, path: str, token: str) -> None:
    with live.http(token=None) as anonymous:
        answer = anonymous.get(path, params={"token": token})
    assert answer.status_code == 401, answer.text
    assert answer.json()["errors"][0]["code"] == UNAUTHORIZED


def test_a_token_opens_its_instance_stream_without_an_api_token(dash: LiveServer) -> None:
    dash.run(dash.engine.workflow("waiter").create(id="w1"))
    dash.wait_step("waiter", "w1", "wait-1")
    minted = _mint(dash, "w1")
    assert minted["url"] == f"/client/v4{url('waiter', 'w1')}?token={minted['token']}"
    with dash.http() as client:
        sent = client.post(f"/accounts/{ACCOUNT}/workflows/waiter/instances/w1/events/go", json={})
        assert sent.status_code == 200
    with dash.http(token=None) as anonymous:
        events = all_events(anonymous, url("waiter", "w1"), params={"token": minted["token"]})
    assert events[0]["type"] == "workflow_queued"
    assert events[-1]["type"] == "workflow_completed"


def test_a_token_opens_nothing_else(dash: LiveServer) -> None:
    for instance in ("w1", "w2"):
        dash.run(dash.engine.workflow("waiter").create(id=instance))
    token = _mint(dash, "w1")["token"]
    # Another instance's stream, the instance itself, the token endpoint: all refused.
    _refused(dash, url("waiter", "w2"), token)
    _refused(dash, f"/accounts/{ACCOUNT}/workflows/waiter/instances/w1", token)
    _refused(dash, url("waiter", "w1") + "/token", token)
    with dash.http(token=None) as anonymous:
        assert anonymous.post(url("waiter", "w1"), params={"token": token}).status_code == 401


def test_a_tampered_or_expired_token_is_refused(dash: LiveServer) -> None:
    dash.run(dash.engine.workflow("waiter").create(id="w1"))
    token = _mint(dash, "w1")["token"]
    body, _, signature = token.partition(".")
    _refused(dash, url("waiter", "w1"), f"{body}.{signature[::-1]}")
    _refused(dash, url("waiter", "w1"), body)
    long_ago = int(time.time() * 1000) - subscribe_token.LIFETIME_MS - 1
    stale, _ = dash.run(subscribe_token.mint(dash.engine.ops, ACCOUNT, "waiter", "w1", long_ago))
    _refused(dash, url("waiter", "w1"), stale)
