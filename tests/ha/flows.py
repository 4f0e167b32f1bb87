"""The workflow of the failover tests; workers import it as ``tests.ha.flows``.

Each step's body appends an ``effect`` line (its side effect) and, once ``step.do`` has
returned (its completion committed, so acknowledged), ``run()`` appends an ``ack`` line, to a
file per process in ``$HA_LOG_DIR``. Lines are whole ``os.write`` calls on an O_APPEND file:
only the database is killed in these tests, never a worker, and what a live process has
written is the kernel's, so no fsync is needed for the test to read it back.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from stepstone import WorkflowEntrypoint

STEPS = ("reserve", "charge", "ship")
FAST_RETRY = {"retries": {"limit": 10, "delay": 100, "backoff": "constant"}}
_files: dict[int, int] = {}  # pid -> descriptor of that process's log


def note(kind: str, instance_id: str, step: str) -> None:
    fd = _files.get(os.getpid())
    if fd is None:
        path = os.path.join(os.environ["HA_LOG_DIR"], f"{os.getpid()}.log")
        fd = _files[os.getpid()] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{time.time_ns()} {kind} {instance_id} {step}\n".encode())


class Ledger(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        n = int(event.payload["n"])
        total = 0
        for name in STEPS:

            async def work(ctx: dict[str, Any], name: str = name) -> int:
                note("effect", event.instance_id, f"{name}-1")
                await asyncio.sleep(0.001)
                return len(name) + n

            total += await step.do(name, work, config=FAST_RETRY)
            note("ack", event.instance_id, f"{name}-1")
        return total
