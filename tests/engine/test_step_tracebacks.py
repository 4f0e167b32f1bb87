"""A failing step's traceback is logged per attempt and shown on the dashboard, while every
API answer keeps the error as exactly {name, message} (issue 11)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepstone import Engine
from stepstone.engine.errors_codec import MAX_TRACEBACK_CHARS, format_traceback
from tests.api.conftest import ACCOUNT, LiveServer, start_server
from tests.dashboard.conftest import sign_in
from tests.dashboard.test_subscribe import all_events, url
from tests.engine import saga_flows
from tests.engine.conftest import steps_of

ERROR = {"name": "ValueError", "message": "boom <x>"}


async def test_each_failed_attempt_is_logged_with_its_traceback(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    await engine.register("exploding", saga_flows.Exploding)
    caplog.set_level(logging.WARNING, logger="stepstone.step")
    handle = await engine.workflow("exploding").create(id="tb")
    status = await handle.wait(10)
    assert status["error"] == ERROR
    records = [r for r in caplog.records if r.name == "stepstone.step"]
    assert [(r.levelno, r.__dict__["attempt"]) for r in records] == [
        (logging.WARNING, 1),
        (logging.WARNING, 2),
    ]
    for number, record in enumerate(records, 1):
        text = record.getMessage()
        assert "instance tb" in text and '"explode-1"' in text
        assert f"attempt {number}: ValueError: boom <x>" in text
        assert "Traceback (most recent call last)" in text
        assert "inner_helper_that_fails" in text
        assert record.__dict__["instance_id"] == "tb"
        assert record.__dict__["step"] == "explode-1"
    step = (await steps_of(engine, "exploding", "tb"))[("do", "explode-1")]
    for attempt in step.attempts:
        assert attempt.error == ERROR
        assert attempt.traceback is not None and "inner_helper_that_fails" in attempt.traceback


def test_a_long_traceback_keeps_its_end_within_the_bound() -> None:
    def fail_at(depth: int) -> None:
        try:
            if depth == 0:
                raise KeyError("the root")
            fail_at(depth - 1)
        except Exception as exc:
            raise RuntimeError(f"level {depth}") from exc

    try:
        fail_at(60)
    except RuntimeError as exc:
        text = format_traceback(exc)
    assert len(text) == MAX_TRACEBACK_CHARS
    assert text.startswith("... (traceback truncated)")
    assert text.rstrip().endswith("RuntimeError: level 60")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server, stop = start_server(f"sqlite:///{tmp_path / 'tb.db'}")
    try:
        server.run(server.engine.register("exploding", saga_flows.Exploding))
        server.run(server.engine.workflow("exploding").create(id="tb"))
        server.wait_done("exploding", "tb")
        yield server
    finally:
        stop()


def test_the_api_shows_errors_as_name_and_message_only(live: LiveServer) -> None:
    client = live.sdk(strict=True)
    details = client.workflows.instances.get("tb", account_id=ACCOUNT, workflow_name="exploding")
    assert details.error is not None and details.error.to_dict() == ERROR
    with live.http() as http:
        raw = http.get(f"/accounts/{ACCOUNT}/workflows/exploding/instances/tb")
        assert "traceback" not in raw.text.lower()
        (step,) = [s for s in raw.json()["result"]["steps"] if s.get("name") == "explode-1"]
        assert [a["error"] for a in step["attempts"]] == [ERROR, ERROR]
        for attempt in (1, 2):
            answer = http.get(
                f"/accounts/{ACCOUNT}/workflows/exploding/instances/tb/step",
                params={"name": "explode-1", "type": "step", "attempt": attempt},
            )
            assert answer.status_code == 200, answer.text
            assert "traceback" not in answer.text.lower()
            assert answer.json()["result"]["error"] == ERROR
        errored = [
            e for e in all_events(http, url("exploding", "tb")) if e["type"] == "attempt_errored"
        ]
        assert [e["error"] for e in errored] == [ERROR, ERROR]
        assert all("traceback" not in e for e in errored), errored


def test_the_dashboard_shows_the_traceback_folded_under_each_failed_attempt(
    live: LiveServer,
) -> None:
    with sign_in(live, live.token) as browser:
        page = browser.get(f"/dashboard/accounts/{ACCOUNT}/workflows/exploding/instances/tb")
    assert page.status_code == 200, page.text
    assert page.text.count('<details class="traceback">') == 2
    assert "inner_helper_that_fails" in page.text
    # Escaped like every value the page shows.
    assert "ValueError: boom &lt;x&gt;" in page.text
    assert "boom <x>" not in page.text
