"""A workflow for a project whose compatibility flags turn implicit dependencies off: its
module is registered with ``python_workflows_implicit_dependencies`` off (test_python_sdk)."""

from __future__ import annotations

from typing import Any

from stepstone import WorkflowEntrypoint


class LegacyDependencies(WorkflowEntrypoint):
    """step.do(name, depends=[...], concurrent=False, config=None), the flag off."""

    async def run(self, event: Any, step: Any) -> Any:
        @step.do("base")
        async def base() -> int:
            return 2

        @step.do("square", depends=[base], concurrent=True)
        async def square(value: int, ctx: Any) -> Any:
            return {"value": value * value, "step": ctx["step"]["name"]}

        @step.do("sum", [base, square])
        async def total(a: int, b: Any) -> int:
            return a + int(b["value"])

        result: dict[str, Any] = {"sum": await total(), "square": await square()}

        @step.do("missing")
        async def missing(base: int) -> int:
            return base

        @step.do("mismatch", depends=[base])
        async def mismatch(a: int, b: int) -> int:
            return a + b

        for key, function in (("missing", missing), ("mismatch", mismatch)):
            try:
                await function()
            except TypeError as exc:
                result[key] = str(exc)
        result["direct"] = await step.do("direct", lambda: "ran")
        return result
