"""Restate's side of the workloads: the same three workflows as ``bench/workflows.py``.

Each step is ``ctx.run_typed(name, noop, i=i)``: a no-op returning ``{"i": i, "ok": True}``,
journaled by the Restate server before the handler goes on. Served over h2c by hypercorn, the
server the Restate Python SDK documents; run from Restate's own venv (never Stepstone's)::

    python -m bench.restate_service PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import restate  # type: ignore[import-not-found]

bench = restate.Service("bench")


async def noop(i: int) -> dict[str, Any]:
    return {"i": i, "ok": True}


@bench.handler()  # type: ignore[untyped-decorator]
async def seq(ctx: restate.Context, req: dict[str, Any]) -> int:
    n = int(req["n"])
    for i in range(n):
        await ctx.run_typed(f"s{i}", noop, i=i)
    return n


@bench.handler()  # type: ignore[untyped-decorator]
async def three(ctx: restate.Context, req: dict[str, Any]) -> int:
    for i in range(3):
        await ctx.run_typed(f"s{i}", noop, i=i)
    return int(req["k"])


@bench.handler()  # type: ignore[untyped-decorator]
async def one(ctx: restate.Context, req: dict[str, Any]) -> int:
    await ctx.run_typed("s0", noop, i=int(req["k"]))
    return int(req["k"])


app = restate.app(services=[bench])


def main() -> None:
    from hypercorn.asyncio import serve  # type: ignore[import-not-found]
    from hypercorn.config import Config  # type: ignore[import-not-found]

    config = Config()
    config.bind = [f"127.0.0.1:{int(sys.argv[1])}"]
    # As the SDK's own test harness sets them: one HTTP/2 connection carries many invocations.
    config.h2_max_concurrent_streams = 2147483647
    config.keep_alive_max_requests = 2147483647
    config.keep_alive_timeout = 2147483647
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    asyncio.run(serve(app, config, mode="asgi"))


if __name__ == "__main__":
    main()
