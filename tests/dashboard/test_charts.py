"""The workflow page's charts, over HTTP on a real server: counts per status, step durations
and retries per step name, window switching, a bad window and the cap note."""

from __future__ import annotations

import re

import pytest

from stepstone.engine.clock import ManualClock
from stepstone.web.dashboard import charts
from tests.dashboard import truth_flows
from tests.dashboard.conftest import ACCOUNT, LiveServer, sign_in

PAGE = f"/dashboard/accounts/{ACCOUNT}/workflows"


def _finished_pipelines(dash: LiveServer, *ids: str) -> None:
    dash.run(dash.engine.register("pipeline", truth_flows.Pipeline))
    for instance_id in ids:
        dash.run(dash.engine.workflow("pipeline").create(id=instance_id))
    for instance_id in ids:
        dash.wait_done("pipeline", instance_id)


def _page(dash: LiveServer, name: str, query: str = "") -> str:
    with sign_in(dash, dash.token) as client:
        answer = client.get(f"{PAGE}/{name}{query}")
        assert answer.status_code == 200, answer.text
        return answer.text


def _section(html: str) -> str:
    match = re.search(r'<section class="card charts".*?</section>', html, re.S)
    assert match, "no charts section on the workflow page"
    return match.group(0)


def _step_row(html: str, step: str) -> list[str]:
    match = re.search(rf"<tr>\s*<th scope=\"row\"><code>{step}</code></th>(.*?)</tr>", html, re.S)
    assert match, f"no row for step {step}"
    return re.findall(r"<td[^>]*>(.*?)</td>", match.group(1), re.S)


def test_counts_step_durations_and_retries_per_step_name(dash: LiveServer) -> None:
    _finished_pipelines(dash, "p-1", "p-2")
    dash.run(dash.engine.workflow("waiter").create(id="w-1"))
    dash.wait_step("waiter", "w-1", "wait-1")
    dash.run(dash.run(dash.engine.workflow("waiter").get("w-1")).terminate())
    dash.wait_done("waiter", "w-1")

    html = _section(_page(dash, "pipeline"))
    assert '<b id="created-total">2</b>' in html
    assert '<b id="finished-total">2</b>' in html
    assert "complete <b>2</b>" in html
    assert 'aria-current="true">24 h</a>' in html
    assert "2 instances created in this window" in html
    # Each of the two runs' fetch failed once and then succeeded: one retry each.
    fetch = _step_row(html, "fetch")
    assert fetch[0] == "2" and fetch[3] == "2" and fetch[4] == "0"
    for step in ("left", "right", "total"):
        row = _step_row(html, step)
        assert row[0] == "2" and row[3] == "0", (step, row)
    # fetch waited out a retry delay, so it is the slowest step and listed first.
    assert html.index("<code>fetch</code>") < html.index("<code>left</code>")
    assert html.count('class="seg complete"') >= 1
    assert 'class="p50"' in html and 'class="p95"' in html

    waiter = _section(_page(dash, "waiter"))
    assert "terminated <b>1</b>" in waiter
    assert '<b id="finished-total">1</b>' in waiter
    assert 'id="steps-none"' in waiter  # a wait is not a step with a duration


def test_window_switching_moves_what_is_counted(dash: LiveServer) -> None:
    _finished_pipelines(dash, "p-1")
    ops = dash.engine.ops
    ops.clock = ManualClock(ops.now() + 2 * charts.HOUR_MS)  # the page's now, two hours on
    hour = _section(_page(dash, "pipeline", "?window=1h"))
    assert 'aria-current="true">1 h</a>' in hour
    assert '<b id="created-total">0</b>' in hour
    assert 'id="steps-none"' in hour
    assert hour.count('class="seg ') == 0
    assert hour.count("none in this window") == 3  # created, finished, backlog
    day = _section(_page(dash, "pipeline", "?window=24h"))
    assert '<b id="created-total">1</b>' in day
    assert "<code>fetch</code>" in day
    week = _section(_page(dash, "pipeline", "?window=7d"))
    assert 'aria-current="true">7 d</a>' in week
    assert '<b id="created-total">1</b>' in week


@pytest.mark.parametrize("value", ["2h", "<b>x</b>", "7D"])
def test_an_unknown_window_shows_the_default_with_a_note(dash: LiveServer, value: str) -> None:
    _finished_pipelines(dash, "p-1")
    html = _section(_page(dash, "pipeline", f"?window={value}"))
    assert 'aria-current="true">24 h</a>' in html
    assert 'id="charts-problem"' in html
    assert "showing 24 h" in html
    assert "<b>x</b>" not in html  # escaped, not markup
    assert '<b id="created-total">1</b>' in html


def test_a_capped_window_says_it_counts_only_the_newest(
    dash: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _finished_pipelines(dash, "p-1", "p-2", "p-3")
    monkeypatch.setattr(charts, "MAX_INSTANCES", 2)
    monkeypatch.setattr(charts, "MAX_HISTORIES", 1)
    html = _section(_page(dash, "pipeline"))
    assert "based on the newest 2 instances created in this window" in html
    assert '<b id="created-total">2</b>' in html
    assert "from the newest 1 instance in the window" in html
    assert _step_row(html, "fetch")[0] == "1"
    monkeypatch.setattr(charts, "MAX_INSTANCES", 3)
    uncapped = _section(_page(dash, "pipeline"))
    assert "based on the newest" not in uncapped
    assert '<b id="created-total">3</b>' in uncapped


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert charts.percentile(values, 0.5) == 50
    assert charts.percentile(values, 0.95) == 95
    assert charts.percentile([7], 0.95) == 7
    assert charts.percentile([1, 2], 0.5) == 1


def test_a_step_called_in_a_loop_counts_as_one_step_name() -> None:
    assert charts.given_name("fetch-1") == "fetch"
    assert charts.given_name("fetch-12") == "fetch"
    assert charts.given_name("fetch-1-2") == "fetch-1"
    assert charts.given_name("no-suffix") == "no-suffix"
