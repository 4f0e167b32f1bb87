"""Pure parts of the CLI: the envelope client, wrangler's date and id rules, rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from stepstone.cli import render
from stepstone.cli.client import ApiError, Binary, Client, CliError, api_root, humanize_key
from stepstone.cli.instances import normalize_date
from stepstone.cli.server_cmds import changed, is_loopback, redact, snapshot


def make(handler: Any) -> Client:
    return Client("http://server:1", "tok", "acc", transport=httpx.MockTransport(handler))


def envelope(result: Any, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"success": True, "errors": [], "result": result, **extra})


def test_api_root() -> None:
    assert api_root("http://h:8787") == "http://h:8787/client/v4"
    assert api_root("http://h:8787/client/v4/") == "http://h:8787/client/v4"
    with pytest.raises(typer.BadParameter):
        api_root("h:8787")


def test_success_is_decided_on_the_envelope() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return envelope([{"name": "a"}], result_info={"cursor": "c2"})

    with make(handler) as c:
        page = c.call_page("GET", c.workflows(), params={"page": 1, "per_page": None})
    assert page.result == [{"name": "a"}] and page.info["cursor"] == "c2"
    assert seen[0].url.path == "/client/v4/accounts/acc/workflows"
    assert seen[0].url.query == b"page=1"
    assert seen[0].headers["authorization"] == "Bearer tok"


def test_errors_carry_code_and_human_detail() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            404,
            json={
                "success": False,
                "errors": [{"code": 10200, "message": "workflows.api.error.workflow.not_found"}],
                "messages": [{"code": 10200, "message": "Workflow 'x' not found"}],
                "result": None,
            },
        )

    with make(handler) as c, pytest.raises(ApiError) as caught:
        c.call("GET", c.workflows("x"))
    assert str(caught.value) == "Workflow 'x' not found (code 10200)"


def test_error_without_detail_uses_the_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {
            "success": False,
            "errors": [{"code": 10003, "message": "workflows.api.error.unauthorized"}],
        }
        return httpx.Response(401, json=body)

    with make(handler) as c, pytest.raises(ApiError) as caught:
        c.call("GET", c.workflows())
    assert str(caught.value) == "unauthorized (code 10003); pass --token or set STEPSTONE_API_TOKEN"


def test_malformed_and_binary_answers() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=b"\x00\x01", headers={"content-type": "application/octet-stream"}
        )

    with make(handler) as c:
        assert c.call("GET", "/x", allow_binary=True) == Binary(
            b"\x00\x01", "application/octet-stream"
        )
        with pytest.raises(CliError, match="malformed response"):
            c.call("GET", "/x")


def test_reads_are_retried_and_writes_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stepstone.cli.client.time.sleep", lambda s: None)
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) < 3:
            return httpx.Response(503, json={"success": False, "errors": [{"code": 10001}]})
        return envelope({"ok": True})

    with make(handler) as c:
        assert c.call("GET", "/x") == {"ok": True}
        assert calls == ["GET", "GET", "GET"]
        calls.clear()
        with pytest.raises(ApiError):
            c.call("POST", "/x")
        assert calls == ["POST"]


def test_latest_is_the_newest_created_and_ids_are_one_segment() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return envelope(
            [
                {"id": "old", "created_on": "2026-01-01T00:00:00.000Z"},
                {"id": "new", "created_on": "2026-01-02T00:00:00.000Z"},
            ]
        )

    with make(handler) as c:
        assert c.resolve("wf", "latest") == "new"
        assert c.resolve("wf", "given") == "given"
        c.call("GET", c.instances("wf", "*/5 * * * *-1786001400000"))
    assert paths[-1].endswith("/instances/%2A%2F5%20%2A%20%2A%20%2A%20%2A-1786001400000")


def test_humanize_key() -> None:
    assert humanize_key("workflows.api.error.instance.not_found") == "instance not found"


def test_dates_are_normalised_like_wrangler() -> None:
    assert normalize_date("2026-01-01", end=False) == "2026-01-01T00:00:00.000Z"
    assert normalize_date("2026-01-31", end=True) == "2026-01-31T23:59:59.999Z"
    assert normalize_date("2026-01-31T10:00:00+02:00", end=False) == "2026-01-31T08:00:00.000Z"
    with pytest.raises(typer.BadParameter):
        normalize_date("yesterday", end=False)


def test_retries_at_and_formatting() -> None:
    step = {
        "type": "step",
        "success": None,
        "attempts": [{"end": "2026-01-01T00:00:00.000Z", "success": False}],
        "config": {"retries": {"delay": "10 seconds"}},
    }
    again = render.retries_at(step)
    assert again is not None and again.isoformat() == "2026-01-01T00:00:10+00:00"
    assert render.retries_at({**step, "config": {"retries": {"delay": "[dynamic]"}}}) is None
    assert render.truncate({"a": "x" * 10}, 5).startswith('{"a":')
    assert (
        render.last_successful_step(
            [
                {"type": "step", "name": "a-1", "success": True},
                {"type": "sleep", "name": "s-1", "end": None},
            ]
        )
        == "a-1"
    )


def test_redact_and_loopback() -> None:
    assert redact("postgresql://me:secret@db/x") == "postgresql://me:***@db/x"
    assert redact("sqlite:///a.db") == "sqlite:///a.db"
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


def test_watch_snapshot_sees_python_and_toml_changes(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text("a")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "lib.py").write_text("a")
    (tmp_path / "notes.txt").write_text("a")
    before = snapshot([tmp_path])
    assert list(before) == [str(tmp_path / "flow.py")]
    (tmp_path / "stepstone.toml").write_text("")
    assert changed(before, snapshot([tmp_path])) == [str(tmp_path / "stepstone.toml")]


def test_print_json_is_plain(capsys: pytest.CaptureFixture[str]) -> None:
    render.print_json({"a": [1]})
    assert json.loads(capsys.readouterr().out) == {"a": [1]}
