"""SQLite FULL: what a front-end reads of an instance is durable when it is answered.

Other connections see a commit while its fdatasync is still under way; a step's result, which
commits without waiting for its sync, is then visible before it is durable. A read through
``Queries`` answers only after that sync, so a client is never shown a result or an end that a
power cut could still take back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from stepstone.ops.queries import Queries
from stepstone.storage.base import InstanceQuery, NewEvent
from stepstone.storage.sqlite_writer import WalSyncer
from tests.storage.conftest import NOW, claimed, syncer_of

Read = Callable[[Queries], Awaitable[Any]]


async def summary(q: Queries) -> int:
    _, found = await q.instance_summary("acct", "orders", "a")
    return found.step_count


async def one_step(q: Queries) -> int:
    _, instance = await q.instance("acct", "orders", "a")
    return len((await q.step_history(instance, "s0-1")).steps)


async def page(q: Queries) -> int:
    workflow = await q.workflow("acct", "orders")
    rows, _ = await q.instance_page(workflow.pk, InstanceQuery(limit=10))
    return len(rows)


async def events(q: Queries) -> int:
    _, instance = await q.instance("acct", "orders", "a")
    return sum(e.type == "step_completed" for e in await q.events(instance))


@pytest.mark.parametrize("read", [summary, one_step, page, events])
async def test_a_read_answers_once_the_result_it_saw_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read: Read
) -> None:
    # A fast disk: a lone result's sync starts only when someone waits for it.
    monkeypatch.setattr(WalSyncer, "EARLY_SYNC_MIN_S", 1e9)
    storage, claim = await claimed(tmp_path)
    try:
        result = [NewEvent("step_completed", NOW, b'{"output":1}', "do", "s0-1")]
        await storage.record_progress(claim, result)
        syncer = syncer_of(storage)
        assert syncer.pending, "the result is committed, not yet synced"

        assert await read(Queries(storage)) == 1  # the read sees the result...
        assert not syncer.pending  # ...and answers only once it is durable
    finally:
        await storage.close()
