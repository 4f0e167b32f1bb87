"""The Python side of the conformance suite: each class is the twin of the JavaScript class of
the same name in workflows.mjs, written as Cloudflare Python Workflows code (``workers``
imports, decorator steps) and run by Stepstone. Keep the two in step."""

from __future__ import annotations

import asyncio
from typing import Any

from workers import WorkflowEntrypoint  # type: ignore[import-not-found]
from workers.workflows import NonRetryableError  # type: ignore[import-not-found]

FAST = {"retries": {"limit": 3, "delay": 10, "backoff": "constant"}}


class Outputs(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("object")
        async def obj() -> Any:
            return {"n": event["payload"]["n"], "tags": ["a", "b"]}

        @step.do("number")
        async def num() -> Any:
            return 41.5

        @step.do("string")
        async def text() -> Any:
            return "plain text"

        @step.do("list")
        async def items() -> Any:
            return [1, "two", None, True]

        @step.do("null")
        async def nothing() -> Any:
            return None

        @step.do("bool")
        async def flag() -> Any:
            return False

        return {
            "obj": await obj(),
            "num": await num(),
            "str": await text(),
            "list": await items(),
            "nothing": await nothing(),
            "flag": await flag(),
            "params": event["payload"],
        }


class Counters(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("x")
        async def first() -> Any:
            return 1

        @step.do("x")
        async def second(ctx: Any) -> Any:
            return ctx["step"]["count"]

        @step.do("y")
        async def other() -> Any:
            return "y"

        @step.do("x")
        async def third(ctx: Any) -> Any:
            return f"{ctx['step']['name']}#{ctx['step']['count']}"

        results = [await first(), await second()]
        await step.sleep("x", 10)
        await other()
        return [*results, await third()]


class RetryThenSucceed(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("flaky", config=FAST)
        async def flaky(ctx: Any) -> Any:
            if ctx["attempt"] < 3:
                raise TypeError(f"attempt {ctx['attempt']} fails")
            return {"attempt": ctx["attempt"]}

        return await flaky()


class NonRetryable(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("ok")
        async def ok() -> Any:
            return "fine"

        @step.do("doomed", config=FAST)
        async def doomed() -> Any:
            raise NonRetryableError("no way")

        await ok()
        await doomed()
        return "unreachable"


class RetriesExhausted(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("down", config={"retries": {"limit": 2, "delay": 10, "backoff": "constant"}})
        async def down() -> Any:
            raise TypeError("service down")

        await down()


class CaughtStepError(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("down", config={"retries": {"limit": 1, "delay": 10, "backoff": "linear"}})
        async def down() -> Any:
            raise TypeError("still down")

        try:
            await down()
        except TypeError as error:
            caught = error

            @step.do("fallback")
            async def fallback() -> Any:
                return {"caught": type(caught).__name__, "why": str(caught)}

            return await fallback()


class StepTimeout(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("slow", config={"retries": {"limit": 0, "delay": 10}, "timeout": 300})
        async def slow() -> Any:
            await asyncio.sleep(5)
            return "too late"

        await slow()


class Sensitive(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("secret", config={"sensitive": "output"})
        async def secret() -> Any:
            return "hunter2"

        value = await secret()

        @step.do("open")
        async def open_step() -> Any:
            return len(value)

        return {"length": await open_step()}


class Sleeper(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("before")
        async def before() -> Any:
            return "before"

        @step.do("after")
        async def after() -> Any:
            return "after"

        await before()
        await step.sleep("nap", "100 milliseconds")
        return await after()


class SleepNames(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        await step.sleep("nap", 10)
        await step.sleep("nap", 20)
        await step.sleep("nap", 10)
        return "rested"


class WaitEvent(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("before")
        async def before() -> Any:
            return "ready"

        await before()
        got = await step.wait_for_event("approval", "approve", timeout="1 hour")
        return {"type": got["type"], "payload": got["payload"]}


class WaitTimeout(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        try:
            await step.wait_for_event("never", "nothing", timeout="1 second")
        except Exception as error:
            return {"caught": type(error).__name__}
        return "delivered"


class BufferedEvent(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        await step.sleep("head start", "500 milliseconds")
        first = await step.wait_for_event("first", "tick", timeout="1 hour")
        second = await step.wait_for_event("second", "tick", timeout="1 hour")
        return [first["payload"], second["payload"]]


class RunThrows(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("load")
        async def load() -> Any:
            return {"valid": False}

        await load()
        raise TypeError("bad input")


class Defaults(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("plain")
        async def plain(ctx: Any) -> Any:
            return ctx["attempt"]

        return await plain()


class Saga(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        async def undo(step_name: str, output: Any) -> Any:
            return f"{step_name} undone ({output})"

        @step.do("reserve", rollback=undo)
        async def reserve() -> Any:
            return "seat 7"

        @step.do("charge", rollback=undo)
        async def charge() -> Any:
            return 100

        @step.do("ship", config=FAST)
        async def ship() -> Any:
            raise NonRetryableError("no courier")

        await reserve()
        await charge()
        await ship()


class Parallel(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        def fetch(name: str, i: int) -> Any:
            @step.do(f"fetch {name}")
            async def one() -> Any:
                return i * 10

            return one()

        results = await asyncio.gather(*(fetch(n, i) for i, n in enumerate(["a", "b", "c"])))

        @step.do("sum")
        async def total() -> Any:
            return sum(results)

        return await total()


class Controlled(WorkflowEntrypoint):  # type: ignore[misc]
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("start")
        async def start() -> Any:
            return "started"

        started = await start()
        got = await step.wait_for_event("go", "go", timeout="1 hour")

        @step.do("finish")
        async def finish() -> Any:
            return got["payload"]

        return {"started": started, "done": await finish()}
