"""wait_for_event(..., match={...}): only a matching payload satisfies (a Stepstone extension)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stepstone import Engine, InstanceHandle, WorkerSettings, WorkflowEntrypoint
from stepstone.storage.event_match import payload_matches
from tests.engine.conftest import wait_for


class MatchThenAny(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        match = event.payload.get("match")
        mine = await step.wait_for_event("mine", "order", timeout="1 hour", match=match)
        rest = await step.wait_for_event("rest", "order", timeout="1 hour")
        return {"mine": mine["payload"], "rest": rest["payload"], "type": mine["type"]}


class TwoAtOnce(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        # The votes are buffered by the time both waits start: which wait takes which event
        # is then up to the matches alone.
        await step.wait_for_event("start", "start", timeout="1 hour")
        a, b = await asyncio.gather(
            step.wait_for_event("a", "vote", timeout="1 hour", match={"who": "a"}),
            step.wait_for_event("b", "vote", timeout="1 hour", match={"who": "b"}),
        )
        return [a["payload"], b["payload"]]


class BadMatch(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        match = event.payload["match"]
        if match == "set":  # what the create call cannot carry: not JSON
            match = {"when": {1, 2}}
        await step.wait_for_event("w", "order", timeout="1 hour", match=match)


@pytest.fixture
async def engine(backend_url: str) -> AsyncIterator[Engine]:
    eng = await Engine.open(
        backend_url, worker_settings=WorkerSettings(concurrency=10, poll_ms=600_000)
    )
    await eng.register("match-then-any", MatchThenAny)
    await eng.register("two-at-once", TwoAtOnce)
    await eng.register("bad-match", BadMatch)
    try:
        yield eng
    finally:
        await eng.close()


async def _waiting(engine: Engine, workflow: str, params: Any) -> InstanceHandle:
    handle = await engine.workflow(workflow).create(params=params)
    await wait_for(handle, "waiting")
    return handle


async def test_a_non_matching_event_stays_buffered_for_a_later_wait(engine: Engine) -> None:
    handle = await _waiting(engine, "match-then-any", {"match": {"order": {"id": 7}}})
    await handle.send_event(type="order", payload={"order": {"id": 1}})
    await handle.send_event(type="order", payload={"order": {"id": 7, "total": 3}, "extra": 1})
    status = await handle.wait(10)
    assert status["output"] == {
        "mine": {"order": {"id": 7, "total": 3}, "extra": 1},
        "rest": {"order": {"id": 1}},
        "type": "order",
    }


async def test_an_event_sent_before_the_wait_is_matched_too(engine: Engine) -> None:
    handle = await engine.workflow("match-then-any").create(params={"match": {"id": "b"}})
    await handle.send_event(type="order", payload={"id": "a"})
    await handle.send_event(type="order", payload={"id": "b"})
    status = await handle.wait(10)
    assert status["output"]["mine"] == {"id": "b"}
    assert status["output"]["rest"] == {"id": "a"}


async def test_without_match_the_oldest_event_is_taken(engine: Engine) -> None:
    handle = await _waiting(engine, "match-then-any", {})
    await handle.send_event(type="order", payload={"n": 1})
    await handle.send_event(type="order", payload={"n": 2})
    status = await handle.wait(10)
    assert status["output"]["mine"] == {"n": 1} and status["output"]["rest"] == {"n": 2}


async def test_concurrent_waits_of_one_type_each_get_their_own_event(engine: Engine) -> None:
    handle = await _waiting(engine, "two-at-once", {})
    await handle.send_event(type="vote", payload={"who": "b", "n": 2})
    await handle.send_event(type="vote", payload={"who": "a", "n": 1})
    await handle.send_event(type="start", payload=None)
    status = await handle.wait(10)
    assert status["output"] == [{"who": "a", "n": 1}, {"who": "b", "n": 2}]


@pytest.mark.parametrize(
    ("match", "problem"),
    [({}, "non-empty dict"), (["id", 1], "non-empty dict"), ("set", "not JSON")],
)
async def test_a_bad_match_fails_the_instance_saying_why(
    engine: Engine, match: Any, problem: str
) -> None:
    handle = await engine.workflow("bad-match").create(params={"match": match})
    status = await handle.wait(10)
    assert status["status"] == "errored"
    assert "match" in status["error"]["message"] and problem in status["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "match", "expected"),
    [
        ({"a": 1, "b": 2}, {"a": 1}, True),
        ({"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"c": 1}}}, True),
        ({"a": {"b": 1}}, {"a": {"b": 2}}, False),
        ({"a": 1}, {"b": 1}, False),
        ({"a": [1, 2]}, {"a": [1, 2]}, True),
        ({"a": [1, 2, 3]}, {"a": [1, 2]}, False),  # lists are exact, not subsets
        ({"a": [{"x": 1, "y": 2}]}, {"a": [{"x": 1}]}, False),  # exact inside a list
        ({"a": True}, {"a": 1}, False),  # a bool is not a number
        ({"a": 1}, {"a": True}, False),
        ({"a": 1.0}, {"a": 1}, True),  # JSON numbers by value
        ({"a": None}, {"a": None}, True),
        ({"a": "1"}, {"a": 1}, False),
        ("text", {"a": 1}, False),
        (None, {"a": 1}, False),
    ],
)
def test_payload_matching(payload: Any, match: dict[str, Any], expected: bool) -> None:
    assert payload_matches(payload, match) is expected
