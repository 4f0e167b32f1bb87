"""With ``--log-format json`` the admin-token and insecure notices are JSON records too: every
line a real ``stepstone serve`` writes parses as one object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli.conftest import start_server


def _served(folder: Path, *args: str) -> list[dict[str, Any]]:
    server = start_server(folder, "--log-format", "json", *args)
    server.stop()
    assert server.process.returncode == 0
    text = (folder / "server.log").read_text()
    lines = []
    for line in text.splitlines():
        if line.strip():
            try:
                lines.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON line: {line!r}\n{text}") from None
    (folder / "server.log").unlink()
    return lines


def _events(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == event]


def test_the_admin_token_notice_is_a_record_without_the_secret(tmp_path: Path) -> None:
    lines = _served(tmp_path)
    [notice] = _events(lines, "admin_token")
    token_file = tmp_path / ".stepstone" / "admin-token"
    assert notice["level"] == "warning" and notice["created"] is True
    assert Path(notice["path"]).resolve() == token_file.resolve()
    secret = token_file.read_text().strip()
    assert secret and all(secret not in json.dumps(line) for line in lines)
    assert any("Stepstone is up on" in line["message"] for line in lines)
    # The next start finds the token: the record says where it is, not that it was made.
    [again] = _events(_served(tmp_path), "admin_token")
    assert again["created"] is False and again["path"] == notice["path"]


def test_the_insecure_banner_is_a_warning_record(tmp_path: Path) -> None:
    lines = _served(tmp_path, "--insecure-no-auth")
    [banner] = _events(lines, "insecure_no_auth")
    assert banner["level"] == "warning" and banner["bind"].startswith("http://127.0.0.1:")
    assert "without credentials" in banner["message"]
    assert not _events(lines, "admin_token")
