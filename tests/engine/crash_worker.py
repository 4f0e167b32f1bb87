"""A worker process for the kill-and-resume test: ``python -m tests.engine.crash_worker URL``.

Every step appends ``start``/``end`` lines with a timestamp to LOG, so the test can tell which
executions began after a step's completion had been recorded.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from typing import Any

from stepstone import Engine, WorkerSettings, WorkflowEntrypoint

STEPS = 40


def note(line: str) -> None:
    # The registered class is imported by module path, not as __main__: read the log's path
    # from the environment rather than a global set by the script.
    with open(os.environ["CRASH_LOG"], "a") as log:
        log.write(f"{time.time_ns() // 1_000_000} {line}\n")
        log.flush()
        os.fsync(log.fileno())


class Crashy(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        total = 0
        for i in range(STEPS):

            async def work(ctx: dict[str, Any], i: int = i) -> int:
                note(f"start {i} {ctx['attempt']}")
                await asyncio.sleep(random.uniform(0.002, 0.02))
                note(f"end {i} {ctx['attempt']}")
                return i

            total += await step.do("work", work)
            if i % 10 == 9:
                await step.sleep("breathe", 20)
        return total


async def main(url: str) -> None:
    engine = await Engine.open(url, worker_settings=WorkerSettings(poll_ms=10, lease_ms=2_000))
    await engine.register("crashy", Crashy)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await engine.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
