"""The webhook outbox is pruned: finished deliveries go after a retention, pending ones stay."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stepstone import Engine, WorkerSettings
from stepstone.engine.clock import ManualClock
from stepstone.model.webhooks import DELIVERED, FAILED, PENDING
from stepstone.webhooks import delivery as delivery_module
from stepstone.webhooks.config import parse_hook
from stepstone.webhooks.delivery import PRUNE_SECONDS, WebhookDispatcher
from tests.engine.conftest import wait_for
from tests.test_webhooks import SECRET, Fails, Receiver

DAY = 86_400_000
RETENTION = 3 * DAY


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    await found.start()
    yield found
    await found.stop()


@pytest.fixture
async def engine(backend_url: str) -> AsyncIterator[Engine]:
    eng = await Engine.open(backend_url, worker_settings=WorkerSettings(poll_ms=25))
    await eng.register("fails", Fails)
    try:
        yield eng
    finally:
        await eng.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _hooks(engine: Engine, **urls: str) -> None:
    record = await engine.ops.workflow("default", "fails")
    hooks = [
        parse_hook({"url": url, "events": ["errored"], "secret": SECRET}, where="t", default_id=i)
        for i, url in urls.items()
    ]
    await engine.storage.put_webhooks(record.pk, hooks, replace_source=None)


async def _deliveries(engine: Engine) -> dict[tuple[str, str], Any]:
    record = await engine.ops.workflow("default", "fails")
    found = await engine.storage.list_deliveries(record.pk, None, None, 500)
    return {(d.hook_id, d.instance_id): d for d in found}


async def outbox_rows(engine: Engine) -> tuple[int, int]:
    """(deliveries, attempts) counted in the tables themselves: a pruned or dropped delivery
    must not leave its attempts behind."""
    storage: Any = engine.storage
    tables = getattr(storage, "_tables", None)
    if tables is not None:  # the plain-Python store: attempts live on their delivery
        return len(tables.deliveries), sum(len(d.log) for d in tables.deliveries.values())
    found = []
    for table in ("webhook_deliveries", "webhook_attempts"):
        sql = f"SELECT count(*) FROM {table}"
        if hasattr(storage, "_db"):
            found.append(int(await storage._db.read(lambda c, q=sql: c.fetchval(q))))
        else:
            found.append(int(storage._read(lambda c, q=sql: c.execute(q).fetchone()[0])))
    return found[0], found[1]


async def _attempt_rows(engine: Engine) -> int:
    return (await outbox_rows(engine))[1]


async def test_finished_deliveries_go_after_the_retention_and_pending_ones_stay(
    engine: Engine, receiver: Receiver
) -> None:
    await _hooks(engine, ok=receiver.url, bad=f"http://127.0.0.1:{_closed_port()}/hook")
    await wait_for(await engine.workflow("fails").create(id="old"), "errored")
    clock = ManualClock()
    sender = WebhookDispatcher(engine.storage, clock=clock, max_attempts=1, retention_ms=RETENTION)
    assert await sender.tick() == 2
    rows = await _deliveries(engine)
    assert rows["ok", "old"].state == DELIVERED and rows["bad", "old"].state == FAILED
    # News of a later instance is still waiting to go out when the old rows expire.
    await wait_for(await engine.workflow("fails").create(id="new"), "errored")
    assert await _attempt_rows(engine) == 2

    clock.advance(RETENTION - 1_000)
    assert await sender.prune(clock.now_ms()) == 0
    clock.advance(2_000)
    assert await sender.prune(clock.now_ms()) == 2
    rows = await _deliveries(engine)
    assert set(rows) == {("ok", "new"), ("bad", "new")}
    assert {d.state for d in rows.values()} <= {PENDING}
    assert await _attempt_rows(engine) == sum(d.attempts for d in rows.values())


async def test_a_resent_delivery_counts_from_its_new_end(
    engine: Engine, receiver: Receiver
) -> None:
    port = _closed_port()
    await _hooks(engine, h=f"http://127.0.0.1:{port}/hook")
    await wait_for(await engine.workflow("fails").create(id="e"), "errored")
    clock = ManualClock()
    sender = WebhookDispatcher(engine.storage, clock=clock, max_attempts=1, retention_ms=RETENTION)
    await sender.tick()
    [failed] = (await _deliveries(engine)).values()
    assert failed.state == FAILED
    # Days later an operator re-sends it: pending, it is never pruned, however old its news.
    clock.advance(RETENTION + DAY)
    workflow = await engine.ops.workflow("default", "fails")
    assert await engine.storage.resend_delivery(workflow.pk, failed.pk, clock.now_ms())
    assert await sender.prune(clock.now_ms()) == 0
    await _hooks(engine, h=receiver.url)
    sender.max_attempts = 5
    assert await sender.tick() == 1
    [done] = (await _deliveries(engine)).values()
    assert done.state == DELIVERED
    # Delivered now: kept for the retention from now, not from the first attempt.
    clock.advance(RETENTION - 1_000)
    assert await sender.prune(clock.now_ms()) == 0
    clock.advance(2_000)
    assert await sender.prune(clock.now_ms()) == 1
    assert await _deliveries(engine) == {}


async def test_the_tick_prunes_once_a_minute_in_batches(
    engine: Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_module, "PRUNE_BATCH", 2)
    await _hooks(engine, h=receiver.url)
    for i in range(5):
        await wait_for(await engine.workflow("fails").create(id=f"i{i}"), "errored")
    clock = ManualClock()
    sender = WebhookDispatcher(engine.storage, clock=clock, retention_ms=RETENTION)
    assert await sender.tick() == 5
    assert len(await _deliveries(engine)) == 5
    clock.advance(RETENTION - 30_000)
    await sender.tick()  # a sweep, with nothing old enough yet
    clock.advance(31_000)
    # Old enough now, but the last sweep was moments ago: the next one waits for its minute.
    await sender.tick()
    assert len(await _deliveries(engine)) == 5
    clock.advance(int(PRUNE_SECONDS * 1000) - 31_000)
    await sender.tick()
    # Five rows in batches of two: all gone in one sweep.
    assert await _deliveries(engine) == {}


def test_a_retention_must_be_positive(tmp_path: Any) -> None:
    from stepstone.storage import open_storage

    with pytest.raises(ValueError, match="retention_ms must be positive"):
        WebhookDispatcher(open_storage("memory://"), retention_ms=0)
