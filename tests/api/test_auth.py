"""Credentials: 401 for none or wrong, 403 for a missing permission or another account;
legacy key pairs, the admin token, revocation (here and from another process), and the
first-start admin token file."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import cloudflare
import httpx
import pytest

from stepstone.auth import (
    SCRIPTS_READ,
    SCRIPTS_WRITE,
    TAIL_READ,
    VERIFIED_FOR_SECONDS,
    create_token,
    ensure_admin_token,
    list_tokens,
    revoke_token,
    verify_secret,
)
from stepstone.storage import open_storage
from tests.api.conftest import ACCOUNT, ADMIN_SECRET, FLOWS, LiveServer, start_server

WF = f"/accounts/{ACCOUNT}/workflows"


def _token(server: LiveServer, permissions: list[str], accounts: list[str] | None = None) -> str:
    _, secret = server.run(
        create_token(server.engine.storage, name="t", permissions=permissions, accounts=accounts)
    )
    return secret


def _code(answer: httpx.Response) -> int:
    body = answer.json()
    assert body["success"] is False and body["result"] is None
    return int(body["errors"][0]["code"])


def test_no_or_wrong_credentials_get_401(server: LiveServer) -> None:
    for token in (None, "wrong", "stp_abc_def"):
        with server.http(token=token) as http:
            for method, path in (("GET", WF), ("PUT", f"{WF}/x"), ("GET", "/openapi.json")):
                answer = http.request(method, path, content=b"{not json")
                assert answer.status_code == 401, (token, method, path)
                assert _code(answer) == 10003
    with httpx.Client(base_url=server.v4) as http:
        basic = http.get(WF, headers={"authorization": "Basic abc"})
        assert basic.status_code == 401
    with pytest.raises(cloudflare.AuthenticationError):
        server.sdk(api_token="nope").workflows.list(account_id=ACCOUNT)


def test_permission_groups(server: LiveServer) -> None:
    server.register("echo", "Echo")
    for group in (SCRIPTS_READ, TAIL_READ):
        with server.http(token=_token(server, [group])) as http:
            assert http.get(WF).status_code == 200
            assert http.get(f"{WF}/echo/instances").status_code == 200
            denied = http.post(f"{WF}/echo/instances", json={})
            assert denied.status_code == 403 and _code(denied) == 10004
            assert http.delete(f"{WF}/echo").status_code == 403
    writer = _token(server, [SCRIPTS_WRITE])
    with server.http(token=writer) as http:
        assert http.get(WF).status_code == 200
        assert http.post(f"{WF}/echo/instances", json={}).status_code == 200


def test_account_limited_token(server: LiveServer) -> None:
    limited = _token(server, [SCRIPTS_WRITE], accounts=[ACCOUNT])
    with server.http(token=limited) as http:
        assert http.get(WF).status_code == 200
        other = http.get("/accounts/other/workflows")
        assert other.status_code == 403 and _code(other) == 10004
        assert [a["id"] for a in http.get("/accounts").json()["result"]] == [ACCOUNT]


def test_legacy_key_pair_service_key_and_admin_token(server: LiveServer) -> None:
    with httpx.Client(base_url=server.v4) as http:
        pair = {"x-auth-email": "me@example.com", "x-auth-key": server.token}
        assert http.get(WF, headers=pair).status_code == 200
        wrong = {"x-auth-email": "me@example.com", "x-auth-key": "nope"}
        assert http.get(WF, headers=wrong).status_code == 401
        service = {"x-auth-user-service-key": server.token}
        assert http.get(WF, headers=service).status_code == 200
        admin = {"authorization": f"Bearer {ADMIN_SECRET}"}
        assert http.get("/accounts/any-account/workflows", headers=admin).status_code == 200
    sdk = cloudflare.Cloudflare(
        base_url=server.v4,
        api_email="me@example.com",
        api_key=server.token,
        max_retries=0,
        _strict_response_validation=True,
    )
    sdk.workflows.update("echo", account_id=ACCOUNT, class_name="Echo", script_name=FLOWS)
    assert [w.name for w in sdk.workflows.list(account_id=ACCOUNT)] == ["echo"]


def test_revoked_token_is_refused(server: LiveServer) -> None:
    record, secret = server.run(
        create_token(server.engine.storage, name="gone", permissions=[SCRIPTS_READ], accounts=None)
    )
    with server.http(token=secret) as http:
        assert http.get(WF).status_code == 200
        assert server.run(revoke_token(server.engine.storage, record.id))
        assert http.get(WF).status_code == 401
    names = [t.name for t in server.run(list_tokens(server.engine.storage))]
    assert "gone" in names


def test_revoked_elsewhere_is_refused_within_the_interval(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process (its own store on the same database) revokes: the server trusts its
    earlier verification for at most ``VERIFIED_FOR_SECONDS``, and asks the database about
    a busy token only about once per interval."""
    record, secret = server.run(
        create_token(server.engine.storage, name="cli", permissions=[SCRIPTS_READ], accounts=None)
    )
    lookups = 0
    find_token = server.engine.storage.find_token

    async def counted(token_hash: str) -> object:
        nonlocal lookups
        lookups += 1
        return await find_token(token_hash)

    monkeypatch.setattr(server.engine.storage, "find_token", counted)

    async def revoke_elsewhere() -> None:
        other = open_storage(server.db_url)
        await other.open()
        try:
            assert await revoke_token(other, record.id)
        finally:
            await other.close()

    with server.http(token=secret) as http:
        started = time.monotonic()
        for _ in range(20):
            assert http.get(WF).status_code == 200
        intervals = (time.monotonic() - started) / VERIFIED_FOR_SECONDS
        assert 1 <= lookups <= 2 + intervals
        asyncio.run(revoke_elsewhere())
        revoked_at = time.monotonic()
        while True:
            sent = time.monotonic()
            status = http.get(WF).status_code
            if status == 401:
                break
            assert status == 200
            assert sent < revoked_at + VERIFIED_FOR_SECONDS, "a revoked token outlived the cache"
            time.sleep(0.02)


def test_insecure_no_auth(tmp_path: Path) -> None:
    live, stop = start_server(f"sqlite:///{tmp_path / 'open.db'}", insecure_no_auth=True)
    try:
        with live.http(token=None) as http:
            assert http.get(WF).status_code == 200
    finally:
        stop()


async def test_admin_token_file_created_once_owner_only(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    await storage.open()
    try:
        secret, created = await ensure_admin_token(storage, tmp_path / "data")
        assert created
        path = tmp_path / "data" / "admin-token"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert path.read_text().strip() == secret
        again, created_again = await ensure_admin_token(storage, tmp_path / "data")
        assert (again, created_again) == (secret, False)
        record = await verify_secret(storage, secret)
        assert record is not None and set(record.permissions) == {
            SCRIPTS_READ,
            SCRIPTS_WRITE,
            TAIL_READ,
        }
        assert len(await list_tokens(storage)) == 1
    finally:
        await storage.close()
    fresh = open_storage(f"sqlite:///{tmp_path / 'b.db'}")
    await fresh.open()
    try:
        # A new database learns the token the data directory already holds.
        same, created = await ensure_admin_token(fresh, tmp_path / "data")
        assert (same, created) == (secret, False)
        assert await verify_secret(fresh, secret) is not None
    finally:
        await fresh.close()
    await asyncio.sleep(0)


async def test_bad_permission_names_are_refused(tmp_path: Path) -> None:
    storage = open_storage("memory://")
    await storage.open()
    try:
        with pytest.raises(Exception, match="unknown permissions"):
            await create_token(storage, name="x", permissions=["Root"], accounts=None)
    finally:
        await storage.close()
