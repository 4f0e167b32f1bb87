"""Real processes: a ``stepstone worker`` with no API scraped on ``--metrics-addr``, beside a
``serve --no-worker`` on the same store; its ``--log-format json`` lines parsed one by one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.cli.conftest import child_env, free_port, start_server
from tests.observability.scrape import value

PROJECT = """
[[workflows]]
name = "fails-once"
class_name = "FailsOnce"
script_name = "tests.observability.flows"
"""
N = 4


def scrape_until(url: str, ready: Any, process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.TransportError:
            text = ""
        if text and ready(text):
            return text
        time.sleep(0.1)
    raise AssertionError(f"never ready; last scrape:\n{text}\nlog:\n{log.read_text()}")


def test_a_worker_alone_serves_its_metrics_and_logs_json(tmp_path: Path) -> None:
    (tmp_path / "stepstone.toml").write_text(PROJECT)
    api_port = free_port()
    api = start_server(
        tmp_path, "--no-worker", "--insecure-no-auth", "--metrics-addr", str(api_port)
    )
    port = free_port()
    log = tmp_path / "worker.log"
    options = ["--db", api.db, "--metrics-addr", f"127.0.0.1:{port}", "--log-format", "json"]
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "stepstone", "worker", "--config", "stepstone.toml", *options],
            cwd=tmp_path,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        scrape_until(metrics_url, lambda text: "stepstone_worker_slots_limit" in text, worker, log)
        for i in range(N):
            httpx.post(
                f"{api.url}/client/v4/accounts/default/workflows/fails-once/instances",
                json={"instance_id": f"p{i}"},
            ).raise_for_status()
        text = scrape_until(
            metrics_url,
            lambda text: (
                value(
                    text,
                    "stepstone_instances_ended_total",
                    workflow="fails-once",
                    status="complete",
                )
                == N
            ),
            worker,
            log,
        )
        attempts = "stepstone_step_attempt_seconds_count"
        assert value(text, attempts, workflow="fails-once", outcome="error") == N
        assert value(text, attempts, workflow="fails-once", outcome="success") == 2 * N
        assert value(text, "stepstone_step_retries_total", workflow="fails-once") == N
        # Created by the API process, not this one; but the store's gauges agree on both.
        assert value(text, "stepstone_instances_created_total", workflow="fails-once") == 0
        assert value(text, "stepstone_worker_slots_limit") == 100
        on_api = httpx.get(f"{api.url}/metrics").text
        # serve's own --metrics-addr (a bare port: on 127.0.0.1) serves the same registry.
        apart = httpx.get(f"http://127.0.0.1:{api_port}/metrics").text
        assert value(apart, "stepstone_instances_created_total", workflow="fails-once") == N
        assert value(on_api, "stepstone_instances_created_total", workflow="fails-once") == N
        assert value(on_api, "stepstone_worker_slots_limit") == 0
        # The store's series are cached for a few seconds; the worker's scrape may be older.
        for scraped in (on_api, text):
            stored = value(scraped, "stepstone_instances", workflow="fails-once", status="complete")
            assert stored in range(N + 1)
        assert httpx.get(f"http://127.0.0.1:{port}/other").status_code == 404
        assert httpx.post(metrics_url).status_code == 405
    finally:
        worker.terminate()
        worker.wait(20)
        api.stop()
    assert worker.returncode == 0, log.read_text()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert any("Stepstone worker is up" in line["message"] for line in lines)
    failures = [line for line in lines if "failed on attempt" in line["message"]]
    assert len(failures) == N
    for line in failures:
        assert line["level"] == "warning"
        assert line["workflow"] == "fails-once"
        assert line["instance_id"] in {f"p{i}" for i in range(N)}
        assert (line["step"], line["attempt"]) == ("flaky-1", 1)
        assert "exception" not in line or "ValueError" in line["exception"]
    # The workflow's own logging carries the same ids.
    own = [line for line in lines if line["logger"] == "tests.observability.flows"]
    assert len(own) == 2 * N
    assert {line["attempt"] for line in own} == {1, 2}
    assert all(line["step"] == "flaky-1" and line["instance_id"] for line in own)
    # The API process kept the default, human-readable format.
    api_log = (tmp_path / "server.log").read_text()
    assert "Stepstone is up on" in api_log and not api_log.lstrip().startswith("{")


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    for option in (["--metrics-addr", "nowhere:99999"], ["--log-format", "yaml"]):
        done = subprocess.run(
            [sys.executable, "-m", "stepstone", "worker", "--db", "sqlite:///x.db", *option],
            cwd=tmp_path,
            env=child_env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert option[0] in done.stderr.decode()


def test_an_exporter_that_is_not_there_fails_the_start_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stepstone", "worker", "--db", f"sqlite:///{tmp_path / 'x.db'}"],
        cwd=tmp_path,
        env=child_env(OTEL_TRACES_EXPORTER="zipkin"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "OTEL_TRACES_EXPORTER=zipkin is not supported" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()
