"""A newcomer's first hour, as real processes: starting (make test's prerequisites, the start-up
lines, the root and favicon a browser asks for, start-up failures as one line), tokens finding
the server's store, and reading what happened (a step asked for as the wrong kind, byte streams
through the official SDK)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudflare
import httpx
import pytest

from tests.cli.conftest import REPO, Server, child_env, free_port, start_server, stepstone
from tests.conftest import pg_database_url
from tests.sdk_args import AccountArg

A: AccountArg = {"account_id": "default"}


def assert_one_clear_line(err: str, *names: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], err


# --- make test: what a tier needs is checked, never silently skipped ---------------------


def make_prerequisites(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "test-prerequisites"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_make_test_fails_naming_a_missing_chromium() -> None:
    missing = make_prerequisites(STEPSTONE_CHROMIUM="/nonexistent/chromium")
    assert missing.returncode != 0
    assert "/nonexistent/chromium" in missing.stderr
    assert "apt-get install -y chromium" in missing.stderr
    on_purpose = make_prerequisites(
        STEPSTONE_CHROMIUM="/nonexistent/chromium", STEPSTONE_SKIP_BROWSER="1"
    )
    assert on_purpose.returncode == 0, on_purpose.stderr


def test_the_browser_tests_fail_rather_than_skip_without_chromium() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPSTONE_", "PYTEST_"))}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command.append("tests/dashboard/test_browser.py")
    run = subprocess.run(
        command,
        cwd=REPO,
        env={**env, "STEPSTONE_CHROMIUM": "/nonexistent/chromium"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode != 0, run.stdout
    assert "skipped" not in run.stdout and "/nonexistent/chromium" in run.stdout
    assert "apt-get install -y chromium" in run.stdout


# --- starting: one line when up, / and /favicon.ico ----------------------------------------


def test_serve_says_where_it_is_up_and_the_dashboard(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--concurrency", "7")
    try:
        log = (tmp_path / "server.log").read_text()
    finally:
        server.stop()
    up = [line for line in log.splitlines() if line.startswith("Stepstone is up on ")]
    assert len(up) == 1, log
    assert f"dashboard {server.url}/dashboard" in up[0]
    assert str(tmp_path / "stepstone.db") in up[0]
    assert "5 workflows: approval, failing, greeter, sleeper, streamer" in up[0]
    assert "worker concurrency 7" in up[0]


def test_worker_says_in_one_line_that_it_is_up(tmp_path: Path) -> None:
    (tmp_path / "stepstone.toml").write_text(
        '[[workflows]]\nname = "greeter"\nclass_name = "Greeter"\nscript_name = "tests.cli.flows"\n'
    )
    db = f"sqlite:///{tmp_path / 'w.db'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "stepstone", "worker", "--db", db, "--concurrency", "3"],
        cwd=tmp_path,
        env=child_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("Stepstone worker is up; "), line
        assert str(tmp_path / "w.db") in line
        assert "1 workflow: greeter" in line and "concurrency 3" in line
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert process.returncode == 0


def admin_token(server: Server) -> str:
    return (server.folder / ".stepstone" / "admin-token").read_text().strip()


def test_root_sends_a_browser_to_the_dashboard_and_api_clients_get_the_api(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path)
    try:
        browser = httpx.get(server.url + "/", headers={"accept": "text/html,*/*;q=0.8"})
        assert browser.status_code == 302 and browser.headers["location"] == "/dashboard"
        landed = httpx.get(server.url + "/", headers={"accept": "text/html"}, follow_redirects=True)
        assert landed.status_code == 200 and landed.url.path == "/dashboard/login"

        bearer = {"authorization": f"Bearer {admin_token(server)}", "accept": "text/html"}
        with_token = httpx.get(server.url + "/", headers=bearer)
        assert with_token.status_code == 404
        assert with_token.json()["errors"][0]["code"] == 10006
        curl = httpx.get(server.url + "/", headers={"accept": "*/*"})
        assert curl.status_code == 401 and curl.json()["success"] is False
    finally:
        server.stop()


def test_favicon_is_served_without_credentials(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        icon = httpx.get(server.url + "/favicon.ico")
        head = httpx.head(server.url + "/favicon.ico")
    finally:
        server.stop()
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert head.status_code == 200
    reserved, kind, count = struct.unpack("<HHH", icon.content[:6])
    assert (reserved, kind, count) == (0, 1, 1)
    width, height, *_, size, offset = struct.unpack("<BBBBHHII", icon.content[6:22])
    assert (width, height) == (32, 32)
    png = icon.content[offset : offset + size]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (32, 32)


def test_a_browser_opening_the_root_lands_on_sign_in_without_console_errors(
    tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    from tests.dashboard.test_browser import ARGS, require_chromium

    executable = require_chromium()
    server = start_server(tmp_path)
    problems: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=ARGS)
            try:
                page = browser.new_page()
                page.on(
                    "console",
                    lambda message: (
                        problems.append(message.text) if message.type == "error" else None
                    ),
                )
                page.on(
                    "response",
                    lambda response: (
                        problems.append(f"{response.status} {response.url}")
                        if response.status >= 400
                        else None
                    ),
                )
                page.goto(server.url + "/")
                page.wait_for_url("**/dashboard/login**")
                # The favicon is fetched after the load; wait for it rather than for time.
                page.wait_for_function("document.readyState === 'complete'")
                favicon = page.request.get(server.url + "/favicon.ico")
                assert favicon.status == 200
            finally:
                browser.close()
    finally:
        server.stop()
    assert problems == []


# --- start-up failures: one clear line, exit 1 ---------------------------------------------


@pytest.mark.parametrize("command", ["serve", "worker", "migrate"])
def test_a_missing_postgresql_database_says_how_to_create_it(tmp_path: Path, command: str) -> None:
    db = pg_database_url("stepstone_first_hour_missing")
    result = stepstone(command, "--db", db, cwd=tmp_path, env=child_env())
    assert result.code == 1
    assert_one_clear_line(
        result.err, "no database 'stepstone_first_hour_missing'", "createdb", "-p"
    )


def test_an_unopenable_sqlite_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    db = f"sqlite:///{tmp_path / 'a-file' / 'x.db'}"
    result = stepstone("serve", "--db", db, cwd=tmp_path, env=child_env())
    assert result.code == 1
    assert_one_clear_line(result.err, "cannot open the SQLite database", str(tmp_path))


def test_a_port_in_use_is_one_line_naming_the_option(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = stepstone(
            "serve",
            "--db",
            f"sqlite:///{tmp_path / 'x.db'}",
            "--port",
            port,
            cwd=tmp_path,
            env=child_env(),
        )
    assert result.code == 1
    assert_one_clear_line(result.err, f"port {port}", "in use", "--port")
    assert not (tmp_path / "x.db").exists(), "the store was opened before the port was checked"


BROKEN_MODULE = """
import helper_that_does_not_exist
"""


def test_a_module_that_fails_to_import_is_one_line_and_the_rest_serve(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text(BROKEN_MODULE)
    (tmp_path / "stepstone.toml").write_text(
        '[[workflows]]\nname = "broken"\nclass_name = "Broken"\nscript_name = "broken"\n\n'
        '[[workflows]]\nname = "greeter"\nclass_name = "Greeter"\n'
        'script_name = "tests.cli.flows"\n'
    )
    server = start_server(tmp_path, "--insecure-no-auth")
    try:
        server.run("workflows", "trigger", "greeter", "--id", "g-1")
        server.wait_status("greeter", "g-1", "complete")
        log = (tmp_path / "server.log").read_text()
    finally:
        server.stop()
    assert "Traceback" not in log, log
    about = [line for line in log.splitlines() if "helper_that_does_not_exist" in line]
    assert len(about) == 1 and "'broken'" in about[0], log
    assert "2 workflows: broken (cannot import), greeter" in log


WORKER_ENTRY = """
import helper_that_does_not_exist
"""


def test_a_wrangler_main_that_fails_to_import_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "entry.py").write_text(WORKER_ENTRY)
    (tmp_path / "wrangler.toml").write_text(
        'name = "w"\nmain = "src/entry.py"\ncompatibility_flags = ["python_workers"]\n'
    )
    port, worker_port = free_port(), free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "stepstone", "serve", "--insecure-no-auth"),
                *("--db", f"sqlite:///{tmp_path / 'x.db'}", "--port", str(port)),
                *("--worker-port", str(worker_port)),
            ],
            cwd=tmp_path,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "Stepstone is up" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(30)
    text = log.read_text()
    assert "Traceback" not in text, text
    assert len([line for line in text.splitlines() if "helper_that_does_not_exist" in line]) == 1


# --- tokens find the server's store ---------------------------------------------------------


def test_tokens_without_db_refuse_a_folder_with_no_store(tmp_path: Path) -> None:
    create = ("tokens", "create", "--name", "ci", "--permission", "write")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = stepstone(*create, cwd=elsewhere, env=child_env())
    assert refused.code == 2
    assert_one_clear_line(refused.err, str(elsewhere / "data" / "stepstone.db"), "--db")
    assert list(elsewhere.iterdir()) == [], "a new store was created"
    listed = stepstone(
        "tokens", "list", "--db", "sqlite:///nope.db", cwd=elsewhere, env=child_env()
    )
    assert listed.code == 2 and "no store at" in listed.err
    assert list(elsewhere.iterdir()) == []

    served = tmp_path / "served"
    served.mkdir()
    assert stepstone("migrate", cwd=served, env=child_env()).code == 0
    here = stepstone(*create, "--json", cwd=served, env=child_env())
    assert here.code == 0, here.err
    assert f"store: sqlite:///data/stepstone.db ({served / 'data' / 'stepstone.db'})" in here.err
    by_env = stepstone(
        "tokens",
        "list",
        "--json",
        cwd=elsewhere,
        env=child_env(STEPSTONE_DATABASE_URL=f"sqlite:///{served / 'data' / 'stepstone.db'}"),
    )
    assert by_env.code == 0 and [t["name"] for t in by_env.json()] == ["ci"]

    bootstrap = stepstone(*create, "--db", "sqlite:///fresh.db", cwd=elsewhere, env=child_env())
    assert bootstrap.code == 0 and (elsewhere / "fresh.db").exists()
    assert "creating a new store" in bootstrap.err


# --- reading what happened ------------------------------------------------------------------

EARLY_BIRD = """
from stepstone import WorkflowEntrypoint


class EarlyBird(WorkflowEntrypoint):
    async def run(self, event, step):
        async def prepare():
            return "ready"

        await step.do("prepare", prepare)
        got = await step.wait_for_event("early bird", "go", timeout="1 hour")
        await step.sleep("nap", "1 hour")
        return got["payload"]
"""


def test_a_step_asked_for_as_the_wrong_kind_names_the_right_one(tmp_path: Path) -> None:
    (tmp_path / "earlybird.py").write_text(EARLY_BIRD)
    (tmp_path / "stepstone.toml").write_text(
        '[[workflows]]\nname = "early"\nclass_name = "EarlyBird"\nscript_name = "earlybird"\n'
    )
    server = start_server(tmp_path, "--insecure-no-auth")
    try:
        server.run("workflows", "trigger", "early", "--id", "e-1")
        server.wait_status("early", "e-1", "waiting")
        wrong = server.run(
            "instances", "step", "early", "e-1", "--step", "early bird-1", check=False
        )
        assert wrong.code == 1
        assert_one_clear_line(wrong.err, "'early bird-1' is a waitForEvent", "--type waitForEvent")
        right = server.run(
            "instances", "step", "early", "e-1", "--step", "early bird-1", "--type", "waitForEvent"
        )
        assert right.code == 0
        other = server.run(
            "instances",
            "step",
            "early",
            "e-1",
            "--step",
            "prepare-1",
            "--type",
            "waitForEvent",
            check=False,
        )
        assert other.code == 1 and "'prepare-1' is a step.do: use --type step" in other.err
        server.run("instances", "send-event", "early", "e-1", "--type", "go", "--payload", "{}")
        deadline = time.monotonic() + 20
        while True:
            nap = server.run("instances", "step", "early", "e-1", "--step", "nap-1", check=False)
            if "is a sleep" in nap.err:
                break
            assert time.monotonic() < deadline, nap.err
            time.sleep(0.2)
        assert nap.code == 1
        unknown = server.run("instances", "step", "early", "e-1", "--step", "nope", check=False)
        assert unknown.code == 1 and "e.g. 'nope-1'" in unknown.err
    finally:
        server.stop()


def test_the_sdk_reads_a_byte_stream_step_only_through_the_raw_response(
    tmp_path: Path,
) -> None:
    """What docs/api.md says about the official SDK and byte-stream steps."""
    server = start_server(tmp_path, "--insecure-no-auth")
    try:
        server.run("workflows", "trigger", "streamer", "--id", "s-1")
        server.wait_status("streamer", "s-1", "complete")
        sdk = cloudflare.Cloudflare(
            api_token="unused", base_url=f"{server.url}/client/v4", max_retries=0
        )
        where: dict[str, Any] = {**A, "workflow_name": "streamer", "type": "step"}
        with pytest.raises(AttributeError):
            sdk.workflows.instances.step("s-1", name="produce-1", **where)
        raw = sdk.workflows.instances.with_raw_response.step("s-1", name="produce-1", **where)
        assert raw.headers["content-type"] == "application/octet-stream"
        expected = b"".join(bytes([i]) * 1000 + b"\xff\xfe" for i in range(3))
        assert raw.read() == expected
        with pytest.raises(AttributeError):
            raw.parse()
        with sdk.workflows.instances.with_streaming_response.step(
            "s-1", name="produce-1", **where
        ) as streamed:
            assert b"".join(streamed.iter_bytes()) == expected

        server.run("workflows", "trigger", "greeter", "--id", "g-1")
        server.wait_status("greeter", "g-1", "complete")
        plain = sdk.workflows.instances.with_raw_response.step(
            "g-1", name="greet-1", **{**where, "workflow_name": "greeter"}
        )
        assert plain.headers["content-type"].startswith("application/json")
        parsed = plain.parse()
        assert parsed is not None
        output = parsed.output
        assert isinstance(output, dict) and output["greeting"] == "hello world"
    finally:
        server.stop()
