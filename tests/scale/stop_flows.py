"""A workflow whose step body reports, in files, when it starts and when it is cancelled.

Worker processes import it as ``tests.scale.stop_flows``; the test reads the files to learn
what happened inside another process.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from stepstone import WorkflowEntrypoint


def _runs(folder: Path, name: str) -> int:
    return len(list(folder.glob(f"{name}.start.*")))


def _mark(folder: Path, name: str, what: str, run: int) -> None:
    (folder / f"{name}.{what}.{run}").write_text(f"{time.time()} {os.getpid()}")


class HeldStep(WorkflowEntrypoint):
    """The first run of ``hold`` blocks until cancelled; later runs return at once."""

    async def run(self, event: Any, step: Any) -> Any:
        folder = Path(event.payload["dir"])
        name = event.instance_id

        async def hold(ctx: dict[str, Any]) -> int:
            run = _runs(folder, name)
            _mark(folder, name, "start", run)
            try:
                if run == 0:
                    await asyncio.Event().wait()
                return run
            except asyncio.CancelledError:
                _mark(folder, name, "cancel", run)
                raise

        return await step.do("hold", hold)
