"""Workflows the engine scenarios run. ``CALLS`` counts real executions of side effects."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from stepstone import NonRetryableError, WorkflowEntrypoint, WorkflowTimeoutError

CALLS: Counter[str] = Counter()
GATES: dict[str, asyncio.Event] = {}
VARIANT = {"diverge": "a"}


def gate(name: str) -> asyncio.Event:
    return GATES.setdefault(name, asyncio.Event())


FAST = {"retries": {"limit": 3, "delay": 20, "backoff": "constant"}}


class Sequential(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        total = 0
        for i in range(event["payload"]["n"]):

            async def add(i: int = i) -> int:
                CALLS[f"seq-{event.instance_id}-{i}"] += 1
                return i

            total += await step.do("add", add)
        return {"total": total}


class Flaky(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        failures = event["payload"]["failures"]

        @step.do("flaky", config=FAST)
        async def flaky(ctx: dict[str, Any]) -> int:
            CALLS[f"flaky-{event.instance_id}"] += 1
            if ctx["attempt"] <= failures:
                raise ConnectionError(f"attempt {ctx['attempt']} failed")
            return int(ctx["attempt"])

        try:
            return {"attempt": await flaky()}
        except ConnectionError as exc:
            return {"gave_up": str(exc)}


class NonRetryable(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def refuse() -> None:
            CALLS[f"refuse-{event.instance_id}"] += 1
            raise NonRetryableError("card declined")

        await step.do("charge", refuse, config=FAST)


class Slow(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def slow(ctx: dict[str, Any]) -> str:
            CALLS[f"slow-{event.instance_id}"] += 1
            if ctx["attempt"] == 1:
                await asyncio.sleep(5)
            return "second attempt in time"

        return await step.do(
            "slow", slow, config={"retries": {"limit": 1, "delay": 10}, "timeout": 100}
        )


class Sleeper(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        await step.do("before", lambda: "x")
        await step.sleep("nap", (event["payload"] or {}).get("ms", 200))
        return await step.do("after", lambda: "woke")


class Approval(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        timeout = (event["payload"] or {}).get("timeout", "1 minute")
        try:
            first = await step.wait_for_event("first", "approval", timeout=timeout)
        except WorkflowTimeoutError as exc:
            return {"timed_out": str(exc)}
        second = await step.wait_for_event("second", "approval", timeout=timeout)
        return [first["payload"], second["payload"], first["type"]]


class Blocking(WorkflowEntrypoint):
    """Holds a step open until the test opens its gate."""

    async def run(self, event: Any, step: Any) -> Any:
        async def hold() -> str:
            CALLS[f"hold-{event.instance_id}"] += 1
            CALLS["holding"] += 1
            CALLS["max-holding"] = max(CALLS["max-holding"], CALLS["holding"])
            try:
                await gate(event["payload"]["gate"]).wait()
            finally:
                CALLS["holding"] -= 1
            return "held"

        first = await step.do("hold", hold)
        second = await step.do("after", lambda: "after")
        return [first, second]


class Saga(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        log = event.instance_id

        async def undo(ctx: dict[str, Any], output: Any, error: Exception) -> None:
            CALLS[f"undo-{log}-{ctx['step']['name']}"] += 1
            if (event["payload"] or {}).get("undo_fails") and ctx["step"]["name"] == "reserve":
                raise NonRetryableError("cannot release")

        await step.do("reserve", lambda: "r1", rollback=undo, rollback_config=FAST)
        await step.do("charge", lambda: "c1", rollback=undo)
        if (event["payload"] or {}).get("wait"):
            await step.wait_for_event("hold", "go", timeout="1 hour")

        async def ship() -> None:
            raise NonRetryableError("warehouse closed")

        await step.do("ship", ship)


class Restartable(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        key = event.instance_id

        def effect(name: str) -> Any:
            async def run() -> str:
                CALLS[f"{key}-{name}"] += 1
                return name

            return run

        a = await step.do("a", effect("a"))
        b = await step.do("b", effect("b"))
        await step.wait_for_event("go", "go", timeout="1 hour")
        c = await step.do("c", effect("c"))
        return [a, b, c]


class Decorated(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        @step.do()
        async def base() -> int:
            CALLS[f"base-{event.instance_id}"] += 1
            return 2

        @step.do("square", concurrent=True)
        async def square(base: int, ctx: dict[str, Any]) -> dict[str, Any]:
            return {"value": base * base, "step": ctx["step"], "attempt": ctx["attempt"]}

        @step.do("cube")
        async def cube(base: int) -> int:
            return base**3

        sq, cu, again = await asyncio.gather(square(), cube(), base())
        return {"square": sq, "cube": cu, "base": again}


class BadParameter(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        @step.do("uses_unknown")
        async def uses_unknown(nobody: int) -> int:
            return nobody

        try:
            await uses_unknown()
        except TypeError as exc:
            return str(exc)
        return "no error"


class Gathered(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def one(i: int) -> int:
            return int(await step.do("part", lambda: i))

        return await asyncio.gather(*(one(i) for i in range(5)))


class Diverging(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        await step.do(VARIANT["diverge"], lambda: 1)
        await step.wait_for_event("go", "go", timeout="1 hour")
        return "done"


class Unserialisable(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        def bad() -> object:
            CALLS[f"unserialisable-{event.instance_id}"] += 1
            return object()

        try:
            await step.do("bad", bad, config=FAST)
        except Exception:
            return "caught"
        return "returned"


class ManySteps(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        for _ in range(event["payload"]["n"]):
            await step.do("s", lambda: None)
        return "done"


class Streams(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        size = event["payload"]["size"]
        data = await step.do("raw", lambda: bytes(range(256)) * (size // 256))

        async def produce() -> Any:
            async def chunks() -> Any:
                for _ in range(4):
                    yield b"abc" * 1000

            return chunks()

        stream = await step.do("iterated", produce)
        streamed = b"".join([chunk async for chunk in stream])
        await step.wait_for_event("go", "go", timeout="1 hour")
        return {"raw": len(data), "raw_ok": data[:3] == b"\x00\x01\x02", "streamed": len(streamed)}


class Parent(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def spawn() -> str:
            child = await self.env.SEQUENTIAL.create(
                id=f"child-of-{event.instance_id}", params={"n": 2}
            )
            return str(child.id)

        child_id = await step.do("spawn", spawn)
        return {"child": child_id, "setting": self.env["GREETING"]}


class DynamicDelay(WorkflowEntrypoint):
    """A delay function sees the error; ctx shows the config without the function."""

    async def run(self, event: Any, step: Any) -> Any:
        seen: list[Any] = []

        def delay(ctx: dict[str, Any], error: Exception) -> int:
            return 30 if isinstance(error, ConnectionError) else 0

        async def flaky(ctx: dict[str, Any]) -> Any:
            seen.append(sorted(ctx["config"]["retries"]))
            if ctx["attempt"] == 1:
                raise ConnectionError("try later")
            return seen

        return await step.do(
            "flaky", flaky, config={"retries": {"limit": 2, "delay": delay, "backoff": "linear"}}
        )
