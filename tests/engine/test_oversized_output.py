"""A step output over 1 MiB (issue 20): as Cloudflare's engine, the attempt fails with
``WorkflowInternalError: Step <name-N> output is too large. Maximum allowed size is 1MiB.`` and is
retried per the step's retry policy; a step out of retries then fails with that error."""

from __future__ import annotations

from typing import Any

from stepstone import Engine, WorkflowEntrypoint
from tests.engine.conftest import steps_of

TOO_LARGE = {
    "name": "WorkflowInternalError",
    "message": "Step huge-1 output is too large. Maximum allowed size is 1MiB.",
}
CALLS: list[int] = []


class Huge(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        def huge(ctx: Any) -> str:
            CALLS.append(ctx["attempt"])
            # Small enough on the last attempt: the retry is what lets the step succeed.
            return "x" * (10 if ctx["attempt"] == 3 else (1 << 20) + 1)

        return len(await step.do("huge", huge, config={"retries": {"limit": 2, "delay": 0}}))


class AlwaysHuge(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        return await step.do(
            "huge", lambda: "x" * (2 << 20), config={"retries": {"limit": 1, "delay": 0}}
        )


async def test_an_oversized_output_fails_the_attempt_and_is_retried(engine: Engine) -> None:
    CALLS.clear()
    await engine.register("huge", Huge)
    status = await (await engine.workflow("huge").create(id="h1")).wait(20)
    assert status["status"] == "complete" and status["output"] == 10
    assert CALLS == [1, 2, 3]
    record = (await steps_of(engine, "huge", "h1"))[("do", "huge-1")]
    assert [a.error for a in record.attempts[:2]] == [TOO_LARGE, TOO_LARGE]


async def test_out_of_retries_the_step_fails_with_that_error(engine: Engine) -> None:
    await engine.register("always-huge", AlwaysHuge)
    status = await (await engine.workflow("always-huge").create(id="h2")).wait(20)
    assert status["status"] == "errored"
    assert status["error"] == TOO_LARGE
