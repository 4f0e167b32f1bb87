"""``retries.limit`` Infinity (Cloudflare's resolved config allows ``number | Infinity``): the
step retries until it succeeds or the instance is stopped; the record says "Infinity"."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

import pytest

from stepstone import Engine, WorkerSettings, WorkflowEntrypoint
from stepstone.authoring.config import resolve_config
from stepstone.errors import WorkflowFatalError
from stepstone.model import history as h
from tests.engine.conftest import LoopPasses, steps_of, wait_for

ATTEMPTS: Counter[str] = Counter()


class UntilTwelve(WorkflowEntrypoint):
    """Fails eleven times (more than any default would allow), then succeeds."""

    async def run(self, event: Any, step: Any) -> Any:
        # The Python value (math.inf) or the JSON one ("Infinity").
        limit = math.inf if event["payload"]["limit"] == "math.inf" else "Infinity"
        retries = {"limit": limit, "delay": 1, "backoff": "constant"}

        @step.do("stubborn", config={"retries": retries})
        async def stubborn(ctx: dict[str, Any]) -> int:
            ATTEMPTS[event.instance_id] += 1
            if ctx["attempt"] < 12:
                raise ConnectionError(f"attempt {ctx['attempt']}")
            return int(ctx["attempt"])

        return await stubborn()


class Never(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("never", config={"retries": {"limit": "Infinity", "delay": 1}})
        async def never() -> None:
            ATTEMPTS[event.instance_id] += 1
            raise ConnectionError("still down")

        await never()


@pytest.fixture
async def engine(backend_url: str) -> Any:
    ATTEMPTS.clear()
    eng = await Engine.open(backend_url, worker_settings=WorkerSettings(poll_ms=10))
    await eng.register("until", UntilTwelve)
    await eng.register("never", Never)
    try:
        yield eng
    finally:
        await eng.close()


@pytest.mark.parametrize("limit", ["Infinity", "math.inf"])
async def test_infinite_limit_retries_until_success(engine: Engine, limit: str) -> None:
    handle = await engine.workflow("until").create(id="u", params={"limit": limit})
    status = await handle.wait(30)
    assert status["status"] == "complete" and status["output"] == 12
    assert ATTEMPTS["u"] == 12
    step = (await steps_of(engine, "until", "u"))[(h.DO, "stubborn-1")]
    # JSON has no infinity: the record (and the API) carry "Infinity".
    assert step.config["retries"]["limit"] == "Infinity"
    assert len(step.attempts) == 12


def test_math_inf_resolves_to_an_infinite_limit() -> None:
    for given in (math.inf, "Infinity"):
        resolved = resolve_config({"retries": {"limit": given, "delay": 1}}, "s")
        assert resolved.limit == math.inf
        assert resolved.recorded()["retries"]["limit"] == "Infinity"


async def test_infinite_retries_stop_when_the_instance_is_terminated(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert engine.worker is not None
    passes = LoopPasses(engine.worker, monkeypatch)
    handle = await engine.workflow("never").create(id="n")
    async with asyncio.timeout(30):
        while ATTEMPTS["n"] < 15:
            await asyncio.sleep(0.01)
    await handle.terminate()
    assert (await wait_for(handle, "terminated"))["status"] == "terminated"
    async with asyncio.timeout(10):  # the attempts run in the activation: it must end
        while engine.worker.active_count:
            await asyncio.sleep(0.005)
    seen = ATTEMPTS["n"]
    await passes.more()  # a whole pass in which to claim it again, were it claimable
    assert engine.worker.active_count == 0 and ATTEMPTS["n"] == seen


@pytest.mark.parametrize("limit", ["inf", -math.inf, math.nan, 10_001, "infinity", 1.5])
def test_other_limits_are_refused(limit: Any) -> None:
    with pytest.raises(WorkflowFatalError, match="Infinity"):
        resolve_config({"retries": {"limit": limit, "delay": 1}}, "s")
