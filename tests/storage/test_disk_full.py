"""SQLite on a disk that fills up for real (issue 11): a tmpfs of 16 MB, filled with a ballast.

Writes answer 507 with their own code and ``Retry-After``, each episode is one log line and no
traceback, reads go on, nothing acknowledged is lost, and writes are accepted again as soon as
space is freed. Mounting needs root; where it is refused the test says so and skips.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ACCOUNT, LiveServer, start_server
from tests.dashboard.conftest import csrf_of, sign_in

FULL = {"code": 10008, "message": "workflows.api.error.storage_full"}
PADDING = "x" * 4096


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
        check=False,
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


def _fill(disk: Path) -> Path:
    ballast = disk / "ballast"
    with open(ballast, "ab") as out:
        try:
            while True:
                out.write(bytes(1 << 16))
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return ballast


def _create(live: LiveServer, instance_id: str) -> tuple[int, dict[str, object], str | None]:
    with live.http() as client:
        answer = client.post(
            f"/accounts/{ACCOUNT}/workflows/echo/instances",
            json={"instance_id": instance_id, "params": {"pad": PADDING}},
        )
    return answer.status_code, answer.json(), answer.headers.get("retry-after")


def _until_full(live: LiveServer, prefix: str, acknowledged: list[str]) -> None:
    """Create until the disk refuses (the WAL's preallocated room takes some first)."""
    for n in range(5000):
        status, body, retry_after = _create(live, f"{prefix}-{n}")
        if status == 200:
            acknowledged.append(f"{prefix}-{n}")
            continue
        assert status == 507, body
        assert body["success"] is False and body["errors"] == [FULL]
        assert retry_after is not None and int(retry_after) > 0
        return
    raise AssertionError("the disk never filled")


def _episode(
    live: LiveServer, browser: httpx.Client, disk: Path, prefix: str, acknowledged: list[str]
) -> None:
    home = f"/dashboard/accounts/{ACCOUNT}/workflows/echo"
    csrf = csrf_of(browser.get(home).text)
    ballast = _fill(disk)
    _until_full(live, prefix, acknowledged)
    for n in range(10):  # every write of the episode refused the same way
        status, body, _ = _create(live, f"{prefix}-refused-{n}")
        assert status == 507 and body["errors"] == [FULL]
    with live.http() as client:
        # Reads go on; the store answers, so it is ready, saying writes are refused.
        assert client.get(f"/accounts/{ACCOUNT}/workflows/echo/instances").status_code == 200
        ready = client.get(f"{live.base}/readyz")
        assert ready.status_code == 200 and ready.json()["result"]["storage"] == "full"
    # The dashboard's own writes get a page saying why, not a 500 with a logged traceback.
    # As large as the refused creates: a small one may still fit in a page the WAL has free.
    params = json.dumps({"pad": PADDING})
    page = browser.post(f"{home}/trigger", data={"csrf": csrf, "params": params})
    assert page.status_code == 507, page.text
    assert "disk under the store is full" in page.text and int(page.headers["retry-after"]) > 0
    ballast.unlink()
    status, body, _ = _create(live, f"{prefix}-after")
    assert status == 200, body
    acknowledged.append(f"{prefix}-after")


def test_a_full_disk_answers_507_once_logged_and_loses_nothing(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{small_disk / 'api.db'}"
    acknowledged: list[str] = []
    # No worker: running the instances would write into the room a freed ballast gives back,
    # at a pace that depends on the machine's load, and fill it before the next episode.
    live, stop = start_server(url, run_worker=False)
    try:
        live.register("echo", "Echo")
        with caplog.at_level(logging.DEBUG), sign_in(live, live.token) as browser:
            _episode(live, browser, small_disk, "first", acknowledged)
            _episode(live, browser, small_disk, "second", acknowledged)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        stop()
    assert [r.getMessage().split(";")[0] for r in warnings] == [
        f"SQLite {small_disk / 'api.db'}: the disk is full"
    ] * 2
    assert not any(r.exc_info for r in warnings)

    live, stop = start_server(url, run_worker=False)
    try:
        with live.http() as client:
            for instance_id in acknowledged:
                answer = client.get(f"/accounts/{ACCOUNT}/workflows/echo/instances/{instance_id}")
                assert answer.status_code == 200, (instance_id, answer.text)
    finally:
        stop()
