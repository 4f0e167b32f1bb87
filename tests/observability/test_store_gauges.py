"""The store's series: read from the store on every backend, served from memory between
readings (a scrape never scans), and read again in the background once stale."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from bench import workflows
from stepstone import Engine
from stepstone.observability.store_gauges import StoreGauges
from stepstone.storage.base import NewInstance
from tests.observability.scrape import value


def text_of(gauges: StoreGauges) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(gauges)
    return generate_latest(registry).decode()


async def test_counts_come_from_the_store_and_scrapes_do_not_read_it(backend_url: str) -> None:
    engine = await Engine.open(backend_url, run_worker=False)
    try:
        await engine.register("one", workflows.OneStep)
        workflow = await engine.storage.get_workflow("default", "one")
        assert workflow is not None
        reads = {"count": 0}
        counting: Any = engine.storage.count_instances

        async def count_instances(workflow_pk: int) -> dict[str, int]:
            reads["count"] += 1
            result: dict[str, int] = await counting(workflow_pk)
            return result

        engine.storage.count_instances = count_instances  # type: ignore[method-assign]

        async def create(ids: list[str]) -> None:
            items = [NewInstance(id=i, params=b"null") for i in ids]
            now = int(time.time() * 1000) - 2_000
            await engine.storage.create_instances(
                workflow.pk, workflow.version.id, items, now, skip_existing=False
            )

        await create(["a", "b", "c"])
        gauges = StoreGauges(engine.storage, ttl=3600)
        await gauges.refresh()
        text = text_of(gauges)
        assert value(text, "stepstone_instances", workflow="one", status="queued") == 3
        assert value(text, "stepstone_queue_depth", workflow="one") == 3
        assert value(text, "stepstone_oldest_runnable_age_seconds") >= 1.5
        assert reads["count"] == 1

        await create(["d", "e"])
        for _ in range(10):
            await gauges.refresh()
        text = text_of(gauges)
        assert reads["count"] == 1  # within the interval: served from memory
        assert value(text, "stepstone_instances", workflow="one", status="queued") == 3

        gauges.ttl = gauges._interval = 0
        await gauges.refresh()  # stale: the next reading starts, this scrape does not wait
        assert gauges._reading is not None
        await gauges._reading
        text = text_of(gauges)
        assert reads["count"] == 2
        assert value(text, "stepstone_instances", workflow="one", status="queued") == 5
    finally:
        await engine.close()
