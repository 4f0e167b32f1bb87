"""Deleting a workflow deletes its webhooks and their deliveries: a hook belongs to a workflow.

Left behind, a hook would keep its (unique) id: the same id added again, or a re-registered
workflow's config hook (whose id is derived from the workflow's name), would update the
orphan and never fire for the new workflow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stepstone import Engine, WorkerSettings
from stepstone.webhooks.config import parse_hook
from tests.engine.conftest import wait_for
from tests.test_webhooks import SECRET, Fails, Receiver
from tests.test_webhooks_prune import _attempt_rows, outbox_rows

HOOK = {"id": "h-orders", "url": "http://127.0.0.1:9/hook", "events": ["errored"]}


@pytest.fixture
async def engine(backend_url: str) -> AsyncIterator[Engine]:
    eng = await Engine.open(backend_url, worker_settings=WorkerSettings(poll_ms=25))
    try:
        yield eng
    finally:
        await eng.close()


async def _outbox_rows(engine: Engine) -> int:
    return (await outbox_rows(engine))[0]


async def _put(engine: Engine, url: str) -> None:
    record = await engine.ops.workflow("default", "fails")
    hook = parse_hook({**HOOK, "url": url, "secret": SECRET}, where="t")
    await engine.storage.put_webhooks(record.pk, [hook], replace_source=None)


async def test_a_deleted_workflow_takes_its_hooks_and_deliveries(engine: Engine) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        await engine.register("fails", Fails)
        await _put(engine, "http://127.0.0.1:9/old")
        await wait_for(await engine.workflow("fails").create(id="e1"), "errored")
        assert await _outbox_rows(engine) == 1

        await engine.ops.delete_workflow("default", "fails")
        assert await _outbox_rows(engine) == 0
        assert await _attempt_rows(engine) == 0

        # The same name again, and a hook of the same id: it is the new workflow's.
        await engine.register("fails", Fails)
        await _put(engine, receiver.url)
        record = await engine.ops.workflow("default", "fails")
        [hook] = await engine.storage.list_webhooks(record.pk)
        assert (hook.id, hook.url) == ("h-orders", receiver.url)
        await wait_for(await engine.workflow("fails").create(id="e2"), "errored")
        [delivery] = await engine.storage.list_deliveries(record.pk, None, None, 10)
        assert (delivery.hook_id, delivery.instance_id) == ("h-orders", "e2")
    finally:
        await receiver.stop()


async def test_other_workflows_keep_their_hooks(engine: Engine) -> None:
    await engine.register("fails", Fails)
    await engine.register("other", Fails)
    other = await engine.ops.workflow("default", "other")
    hook = parse_hook({**HOOK, "id": "h-other", "secret": SECRET}, where="t")
    await engine.storage.put_webhooks(other.pk, [hook], replace_source=None)
    await _put(engine, "http://127.0.0.1:9/old")
    await wait_for(await engine.workflow("other").create(id="o1"), "errored")
    await engine.ops.delete_workflow("default", "fails")
    assert [h.id for h in await engine.storage.list_webhooks(other.pk)] == ["h-other"]
    assert await _outbox_rows(engine) == 1
