"""Terminate-all: a background job per workflow, whose state GET .../instances/terminate
reports. Jobs live in the API process; they end with it (instances not yet reached stay as
they were, and a new PUT starts over)."""

from __future__ import annotations

import asyncio
import logging

from stepstone.errors import StepstoneError
from stepstone.model.actors import Actor
from stepstone.model.records import Conflict, InstanceQuery
from stepstone.model.statuses import TERMINABLE, TERMINAL
from stepstone.ops import Operations

log = logging.getLogger("stepstone.api")
_PAGE = 100


class TerminateJobs:
    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def running(self, account_id: str, workflow_name: str) -> bool:
        task = self._tasks.get((account_id, workflow_name))
        return task is not None and not task.done()

    def start(
        self,
        ops: Operations,
        account_id: str,
        workflow_name: str,
        status: str | None,
        actor: Actor,
    ) -> bool:
        """Start a job; False if one is already running for the workflow. Each terminate is
        recorded in the audit log as ``actor``'s, who asked for them all."""
        key = (account_id, workflow_name)
        if self.running(*key):
            return False
        task = asyncio.create_task(_terminate_all(ops, account_id, workflow_name, status, actor))
        self._tasks[key] = task
        return True

    async def wait(self) -> None:
        tasks = [t for t in self._tasks.values() if not t.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def cancel_all(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()


async def _terminate_all(
    ops: Operations, account_id: str, workflow_name: str, status: str | None, actor: Actor
) -> None:
    try:
        workflow = await ops.workflow(account_id, workflow_name)
        for wanted in (status,) if status else TERMINABLE:
            after: tuple[int, str] | None = None
            while True:
                query = InstanceQuery(status=wanted, after=after, ascending=True, limit=_PAGE)
                page = await ops.instances(workflow.pk, query)
                for record in page:
                    if record.status in TERMINAL:
                        continue
                    try:
                        await ops.terminate(account_id, workflow_name, record.id, actor=actor)
                    except (StepstoneError, Conflict):
                        # It ended or vanished meanwhile; nothing left to stop.
                        continue
                if len(page) < _PAGE:
                    break
                after = (page[-1].created_on, page[-1].id)
    except StepstoneError:
        log.info("terminate-all for %s/%s stopped: the workflow is gone", account_id, workflow_name)
    except Exception:
        log.exception("terminate-all for %s/%s failed", account_id, workflow_name)
