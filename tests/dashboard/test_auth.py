"""The dashboard's sign-in, sessions, permissions and CSRF, over plain HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from stepstone.auth import PERMISSIONS, create_token, revoke_token
from tests.api.conftest import start_server
from tests.dashboard.conftest import (
    ACCOUNT,
    LiveServer,
    browser_client,
    csrf_of,
    prepare,
    sign_in,
)

WF = f"/dashboard/accounts/{ACCOUNT}/workflows/waiter"
INSTANCE = f"{WF}/instances/held"
PAGES = [
    "/dashboard/workflows",
    WF,
    INSTANCE,
    f"{INSTANCE}/output?kind=waitForEvent&name=wait-1",
    f"{INSTANCE}?fragment=1",
]
ACTIONS = [
    (f"{WF}/trigger", {"params": "{}"}),
    (f"{WF}/bulk", {"action": "terminate", "ids": "held", "confirm": "yes"}),
    (f"{INSTANCE}/action", {"action": "pause"}),
    (f"{INSTANCE}/action", {"action": "terminate"}),
    (f"{INSTANCE}/action", {"action": "restart"}),
    (f"{INSTANCE}/action", {"action": "delete"}),
    (f"{INSTANCE}/event", {"type": "go", "payload": "1"}),
]


@pytest.fixture
def held(dash: LiveServer) -> LiveServer:
    dash.run(dash.engine.workflow("waiter").create(id="held"))
    dash.wait_step("waiter", "held", "wait-1")
    return dash


def status(live: LiveServer) -> str:
    found = live.wait_status("waiter", "held", {"waiting", "paused", "terminated", "complete"})
    return str(found["status"])


def test_no_page_and_no_action_without_a_session(held: LiveServer) -> None:
    with browser_client(held) as anonymous:
        for path in PAGES:
            answer = anonymous.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/dashboard/login?next=")
        assert anonymous.get(f"{INSTANCE}/events").status_code == 401
        for path, form in ACTIONS:
            answer = anonymous.post(path, data={**form, "csrf": "guess"})
            assert answer.status_code == 401, path
        # A session id that was never handed out is no session.
        anonymous.cookies.set("stepstone_session", "made-up", path="/dashboard")
        assert anonymous.get("/dashboard/workflows").status_code == 303
    assert status(held) == "waiting"


def test_a_wrong_token_does_not_sign_in(held: LiveServer) -> None:
    with browser_client(held) as client:
        form = client.get("/dashboard/login")
        answer = client.post(
            "/dashboard/login", data={"token": "stp_nope_nope", "csrf": csrf_of(form.text)}
        )
        assert answer.status_code == 401
        assert "unknown or revoked" in answer.text
        assert "stepstone_session" not in client.cookies
        # Without the sign-in form's own CSRF value, not even a good token gets in.
        client.cookies.clear()
        forged = client.post("/dashboard/login", data={"token": held.token, "csrf": "x"})
        assert forged.status_code == 403
        assert "stepstone_session" not in client.cookies


def test_the_session_cookie_holds_no_token(held: LiveServer) -> None:
    with browser_client(held) as client:
        form = client.get("/dashboard/login")
        answer = client.post(
            "/dashboard/login",
            data={"token": held.token, "csrf": csrf_of(form.text), "next": "https://evil.test/"},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard/workflows"
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith("stepstone_session=")
        )
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert "Path=/dashboard" in cookie
        session_id = client.cookies["stepstone_session"]
        assert held.token not in session_id and session_id not in held.token
        for path in PAGES:
            page = client.get(path)
            assert page.status_code == 200, path
            assert held.token not in page.text
            assert "content-security-policy" in page.headers
            assert page.headers["x-frame-options"] == "DENY"


def test_a_read_only_token_sees_but_cannot_act(held: LiveServer) -> None:
    with sign_in(held, held.extra["read_only"]) as client:
        for path in PAGES:
            assert client.get(path).status_code == 200, path
        instance = client.get(INSTANCE).text
        assert "read-only" in instance
        for button in (">Pause<", ">Terminate<", "Send event", "Delete instance"):
            assert button not in instance
        assert "Trigger an instance" not in client.get(WF).text
        csrf = csrf_of(instance)
        for path, form in ACTIONS:
            answer = client.post(path, data={**form, "csrf": csrf})
            assert answer.status_code == 403, path
            assert "Workers Scripts Write" in answer.text
    assert status(held) == "waiting"
    with held.http() as api:
        listed = api.get(f"/accounts/{ACCOUNT}/workflows/waiter/instances").json()["result"]
    assert [i["id"] for i in listed] == ["held"]


def test_every_post_needs_the_sessions_csrf_token(held: LiveServer) -> None:
    with sign_in(held, held.token) as client:
        csrf = csrf_of(client.get(INSTANCE).text)
        missing = client.post(f"{INSTANCE}/action", data={"action": "pause"})
        assert missing.status_code == 403
        assert "CSRF" in missing.text
        wrong = client.post(f"{INSTANCE}/action", data={"action": "pause", "csrf": csrf + "x"})
        assert wrong.status_code == 403
        cross_site = client.post(
            f"{INSTANCE}/action",
            data={"action": "pause", "csrf": csrf},
            headers={"origin": "https://evil.test"},
        )
        assert cross_site.status_code == 403
        assert status(held) == "waiting"
        for path, form in ACTIONS[:1]:
            assert client.post(path, data=form).status_code == 403
        done = client.post(f"{INSTANCE}/action", data={"action": "pause", "csrf": csrf})
        assert done.status_code == 303
        assert status(held) == "paused"
        # Signing out needs the token too; after it the session is gone.
        client.post("/dashboard/logout", data={"csrf": csrf})
        assert client.get("/dashboard/workflows").status_code == 303


def test_revoking_the_token_ends_its_sessions(held: LiveServer) -> None:
    record, secret = held.run(
        create_token(
            held.engine.storage, name="short", permissions=list(PERMISSIONS), accounts=None
        )
    )
    with sign_in(held, secret) as client:
        assert client.get("/dashboard/workflows").status_code == 200
        held.run(revoke_token(held.engine.storage, record.id))
        answer = client.get("/dashboard/workflows")
        assert answer.status_code == 303
        assert "expired=1" in answer.headers["location"]
        assert client.get("/dashboard/workflows").status_code == 303


def test_a_token_limited_to_other_accounts_sees_nothing_here(held: LiveServer) -> None:
    _, secret = held.run(
        create_token(
            held.engine.storage, name="other", permissions=list(PERMISSIONS), accounts=["other"]
        )
    )
    with sign_in(held, secret) as client:
        listing = client.get("/dashboard/workflows")
        assert listing.status_code == 200
        assert "No workflows yet" in listing.text
        assert client.get(INSTANCE).status_code == 403
        csrf = csrf_of(listing.text)
        assert (
            client.post(f"{INSTANCE}/action", data={"action": "pause", "csrf": csrf}).status_code
            == 403
        )
    assert status(held) == "waiting"


def test_actions_that_the_instance_refuses_come_back_as_messages(held: LiveServer) -> None:
    with sign_in(held, held.token) as client:
        csrf = csrf_of(client.get(INSTANCE).text)
        client.post(f"{INSTANCE}/action", data={"action": "terminate", "csrf": csrf})
        again = client.post(f"{INSTANCE}/action", data={"action": "terminate", "csrf": csrf})
        assert again.status_code == 303
        page = client.get(INSTANCE).text
        assert "finite state" in page
        bad = client.post(f"{INSTANCE}/event", data={"type": "go", "payload": "{", "csrf": csrf})
        assert bad.status_code == 303
        assert "not valid JSON" in client.get(INSTANCE).text
        unknown = client.get(f"{WF}/instances/ghost")
        assert unknown.status_code == 404


def test_the_api_is_still_guarded(held: LiveServer) -> None:
    with httpx.Client(base_url=held.v4) as anonymous:
        assert anonymous.get(f"/accounts/{ACCOUNT}/workflows").status_code == 401


def test_without_auth_the_sign_in_asks_for_no_token_but_forms_keep_csrf(tmp_path: Path) -> None:
    live, stop = start_server(f"sqlite:///{tmp_path / 'open.db'}", insecure_no_auth=True)
    try:
        prepare(live)
        with browser_client(live) as client:
            form = client.get("/dashboard/login")
            assert "API token" not in form.text
            answer = client.post("/dashboard/login", data={"csrf": csrf_of(form.text)})
            assert answer.status_code == 303
            listing = client.get("/dashboard/workflows")
            assert listing.status_code == 200
            assert "waiter" in listing.text
            trigger = client.post(f"{WF}/trigger", data={"params": "{}"})
            assert trigger.status_code == 403
    finally:
        stop()
