"""Series about the shared store, read from it at scrape time and cached.

A process-local count would be wrong as soon as several processes share PostgreSQL, so these
come from the store itself, through the storage contract (no SQL here):

- instances by workflow and status: ``count_instances``, a GROUP BY over the
  ``instances_by_status`` index (an index-only count; about 10 ms per 100,000 instances on
  SQLite here, docs/operations.md). A status-count table kept in every status-changing
  transaction would make the read O(1) but costs every step's and claim's write a row update
  and a hot row on PostgreSQL; a count cached for ``ttl`` seconds keeps the scrape O(1) in
  the number of instances on all but one scrape in each interval and costs the hot path
  nothing.
- queue depth (runnable now, not leased) per workflow: ``concurrency_usage``, from the
  ``instances_unleased_by_workflow`` index, bounded by the backlog, not the store.
- the age of the oldest runnable instance: ``next_wake_at``, an ``ORDER BY runnable_at
  LIMIT 1`` on the ``instances_wake`` partial index.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from stepstone.storage.base import Storage

DEFAULT_TTL_SECONDS = 5.0
# Workflows counted per refresh; a store with more is counted on the first this many.
MAX_WORKFLOWS = 10_000


class StoreGauges(Collector):
    def __init__(
        self, storage: Storage, *, account_id: str | None = None, ttl: float = DEFAULT_TTL_SECONDS
    ) -> None:
        self.storage = storage
        self.account_id = account_id
        self.ttl = ttl
        self._at = float("-inf")
        self._lock = asyncio.Lock()
        self._by_status: list[tuple[str, str, int]] = []
        self._queued: list[tuple[str, int]] = []
        self._oldest_age: float = 0.0

    async def refresh(self) -> None:
        """Read the store again if the last reading is older than ``ttl``; concurrent
        scrapes share one reading."""
        if time.monotonic() - self._at < self.ttl:
            return
        async with self._lock:
            if time.monotonic() - self._at < self.ttl:
                return
            now = int(time.time() * 1000)
            records, _ = await self.storage.list_workflows(self.account_id, None, 0, MAX_WORKFLOWS)
            by_status: list[tuple[str, str, int]] = []
            queued: list[tuple[str, int]] = []
            for record in records:
                counts = await self.storage.count_instances(record.pk)
                by_status.extend((record.name, s, n) for s, n in sorted(counts.items()))
                _, waiting = await self.storage.concurrency_usage(record.pk, now)
                queued.append((record.name, waiting))
            due = await self.storage.next_wake_at(None)
            self._by_status, self._queued = by_status, queued
            self._oldest_age = 0.0 if due is None else max(0, now - due) / 1000
            self._at = time.monotonic()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        instances = GaugeMetricFamily(
            "stepstone_instances",
            "Instances in the store by workflow and status (cached for a few seconds).",
            labels=["workflow", "status"],
        )
        for name, status, n in self._by_status:
            instances.add_metric([name, status], n)
        yield instances
        depth = GaugeMetricFamily(
            "stepstone_queue_depth",
            "Instances runnable now that no worker holds, by workflow.",
            labels=["workflow"],
        )
        for name, n in self._queued:
            depth.add_metric([name], n)
        yield depth
        yield GaugeMetricFamily(
            "stepstone_oldest_runnable_age_seconds",
            "How long the longest-due runnable instance, not held by a worker, has been due.",
            value=self._oldest_age,
        )
