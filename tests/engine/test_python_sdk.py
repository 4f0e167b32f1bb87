"""Cloudflare's Python Workflows SDK surface (issue 12), through the real engine on every
backend: the saga API of the Python Workers API page, the legacy ``depends`` signature,
``sleep``/``sleep_until`` units and zones, the ``event`` and the names errors use."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest

from stepstone import Engine, loader
from stepstone.model import history as h
from tests.engine import legacy_flows, saga_flows
from tests.engine.conftest import steps_of

FLOWS = {
    "py-saga": saga_flows.PySaga,
    "legacy": legacy_flows.LegacyDependencies,
    "waker": saga_flows.Waker,
    "event-shape": saga_flows.EventShape,
    "bad-calls": saga_flows.BadCalls,
}


@pytest.fixture
async def sdk(engine: Engine, legacy_mode: None) -> AsyncIterator[Engine]:
    saga_flows.SEEN.clear()
    for name, cls in FLOWS.items():
        await engine.register(name, cls)
    yield engine


async def rollback_steps(engine: Engine, workflow: str, instance_id: str) -> list[str]:
    steps = await steps_of(engine, workflow, instance_id)
    ordered = sorted(steps.values(), key=lambda s: s.first_event_id)
    return [s.name for s in ordered if s.kind == h.ROLLBACK]


# --- the saga API ---------------------------------------------------------------------------


async def test_rollback_all_undoes_started_steps_newest_first(sdk: Engine) -> None:
    handle = await sdk.workflow("py-saga").create(id="saga")
    status = await handle.wait(10)
    # The code re-raised after compensating; the engine ran no rollback phase of its own.
    assert status["error"] == {"name": "NonRetryableError", "message": "mail down"}
    assert status["rollback"] is None
    assert saga_flows.SEEN["saga"] == [
        ("undo charge", "mail down", {"charge": "o1"}),
        ("undo create", "mail down", {"id": "o1"}),
    ]
    # Each undo is a recorded step, shown as a rollback of its forward step.
    assert await rollback_steps(sdk, "py-saga", "saga") == ["charge payment-1", "create order-1"]


async def test_a_failed_step_is_undone_with_no_value(sdk: Engine) -> None:
    handle = await sdk.workflow("py-saga").create(id="declined", params={"charge_fails": True})
    status = await handle.wait(10)
    assert status["error"] == {"name": "NonRetryableError", "message": "card declined"}
    assert saga_flows.SEEN["declined"] == [
        ("undo charge", "card declined", None),
        ("undo create", "card declined", {"id": "o1"}),
    ]


async def test_a_failing_undo_is_retried_then_stops_the_chain(sdk: Engine) -> None:
    handle = await sdk.workflow("py-saga").create(id="stuck", params={"undo_fails": True})
    status = await handle.wait(10)
    assert status["error"] == {"name": "RuntimeError", "message": "refund failed"}
    # Its own config: limit 1 is two attempts (the retry in a later activation, after the
    # delay); the older step's undo never runs.
    assert [entry[0] for entry in saga_flows.SEEN["stuck"]] == ["undo charge", "undo charge"]
    record = (await steps_of(sdk, "py-saga", "stuck"))[(h.ROLLBACK, "charge payment-1")]
    assert [a.success for a in record.attempts] == [False, False]


async def test_continue_on_error_runs_every_undo_and_raises_them_together(sdk: Engine) -> None:
    handle = await sdk.workflow("py-saga").create(
        id="group", params={"undo_fails": True, "continue": True}
    )
    status = await handle.wait(10)
    assert status["error"]["name"] == "ExceptionGroup"
    assert status["error"]["message"].startswith("step.rollback_all(): 1 undo function(s) failed")
    assert [entry[0] for entry in saga_flows.SEEN["group"]] == [
        "undo charge",
        "undo charge",
        "undo create",
    ]


# --- step.do's legacy signature ---------------------------------------------------------------


@pytest.fixture
def legacy_mode() -> Iterator[None]:
    """legacy_flows' project has python_workflows_implicit_dependencies off, as a wrangler
    config says it (stepstone.cloudflare.config); the worker hands that to its activations."""
    loader.set_implicit_dependencies(legacy_flows.__name__, False)
    try:
        yield
    finally:
        loader.set_implicit_dependencies(legacy_flows.__name__, True)


async def test_legacy_depends_pass_results_in_order_with_workerds_type_errors(
    sdk: Engine,
) -> None:
    output = (await (await sdk.workflow("legacy").create(id="legacy")).wait(10))["output"]
    assert output == {
        "sum": 6,
        "square": {"value": 4, "step": "square"},
        "missing": "Step has 1 non-ctx parameter(s) but no 'depends' list provided",
        "mismatch": "Step declares 2 non-ctx parameter(s) but 'depends' has 1 item(s)",
        "direct": "ran",
    }


async def test_the_implicit_signature_refuses_depends_by_its_public_name(sdk: Engine) -> None:
    output = (await (await sdk.workflow("bad-calls").create(id="bad")).wait(10))["output"]
    assert output == [
        "step.do() got an unexpected keyword argument 'bogus'",
        "step.do() got an unexpected keyword argument 'depends'",
        "step.sleep() missing 1 required positional argument: 'duration'",
        "step.sleep_until() missing 2 required positional arguments: 'name' and 'timestamp'",
        "step.wait_for_event() got an unexpected keyword argument 'timeot'",
        "step.with_rollback() missing 1 required positional argument: 'name'",
        "step.rollback_all() takes from 1 to 2 positional arguments but 3 were given",
    ]


# --- sleeps and the event -------------------------------------------------------------------


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_a_naive_sleep_until_is_local_time_and_numbers_are_milliseconds(
    sdk: Engine, new_york: None
) -> None:
    handle = await sdk.workflow("waker").create(id="waker")
    assert (await handle.wait(10))["output"] == "awake"
    steps = await steps_of(sdk, "waker", "waker")
    short = steps[(h.SLEEP, "short-1")]
    assert short.config == {"durationMs": 50}
    later = steps[(h.SLEEP, "later-1")]
    assert later.wake_at is not None and 0 < later.wake_at - later.start < 5_000


async def test_the_event_has_the_documented_keys_as_keys_and_attributes(sdk: Engine) -> None:
    handle = await sdk.workflow("event-shape").create(id="ev", params={"n": 1})
    output = (await handle.wait(10))["output"]
    created = output["timestamp"][0]
    assert output == {
        "keys": ["instanceId", "payload", "timestamp", "workflowName"],
        "payload": [{"n": 1}] * 3,
        "timestamp": [created, created],
        "instanceId": ["ev"] * 3,
        "workflowName": ["event-shape"] * 3,
    }
    assert created.endswith("+00:00")
