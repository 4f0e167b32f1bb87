"""Series about the shared store, read from it in the background and served from memory.

A process-local count would be wrong as soon as several processes share PostgreSQL, so these
come from the store itself, through the storage contract (no SQL here):

- instances by workflow and status: ``count_instances``, a GROUP BY over the
  ``instances_by_status`` index. A status-count table kept in every status-changing
  transaction would make the read O(1), but costs every claim and release an update of one
  hot row per (workflow, status), on PostgreSQL a row lock every worker queues on. Counting
  costs the hot path nothing; a reading costs about 1.8 ms per 1,000 instances on SQLite and
  1.1 ms on PostgreSQL here (docs/operations.md).
- queue depth (runnable now, not leased) per workflow: ``concurrency_usage``, from the
  ``instances_unleased_by_workflow`` index, bounded by the backlog.
- the age of the oldest runnable instance: ``next_wake_at``, an ``ORDER BY runnable_at
  LIMIT 1`` on the ``instances_wake`` partial index.

A scrape never waits for a reading (except the very first): it serves the last one and, if
that is older than ``ttl``, starts the next in the background. The interval also grows with
the reading's cost (at least ``COST_FACTOR`` times its duration), so that a large store costs
at most about 1/COST_FACTOR of a core however often it is scraped; the series then lag by
that interval, which ``stepstone_store_gauges_age_seconds`` shows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from stepstone.storage.base import Storage

log = logging.getLogger("stepstone.metrics")
DEFAULT_TTL_SECONDS = 5.0
COST_FACTOR = 20
# Workflows counted per reading; a store with more is counted on the first this many.
MAX_WORKFLOWS = 10_000


class StoreGauges(Collector):
    def __init__(
        self, storage: Storage, *, account_id: str | None = None, ttl: float = DEFAULT_TTL_SECONDS
    ) -> None:
        self.storage = storage
        self.account_id = account_id
        self.ttl = ttl
        self._at: float | None = None
        self._interval = ttl
        self._reading: asyncio.Task[None] | None = None
        self._by_status: list[tuple[str, str, int]] = []
        self._queued: list[tuple[str, int]] = []
        self._oldest_age: float = 0.0

    async def refresh(self) -> None:
        """Start a reading if the last is older than the interval; wait only for the first."""
        if self._at is not None and time.monotonic() - self._at < self._interval:
            return
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read(), name="stepstone-store-gauges")
        if self._at is None:
            await asyncio.shield(self._reading)

    async def _read(self) -> None:
        started = time.monotonic()
        try:
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
        except Exception as exc:
            # A store outage: the last reading stays; the next scrape tries again.
            log.debug("store gauges not read: %s", exc)
            if self._at is None:
                raise
            return
        self._by_status, self._queued = by_status, queued
        self._oldest_age = 0.0 if due is None else max(0, now - due) / 1000
        self._at = time.monotonic()
        self._interval = max(self.ttl, COST_FACTOR * (self._at - started))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        instances = GaugeMetricFamily(
            "stepstone_instances",
            "Instances in the store by workflow and status.",
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
        age = GaugeMetricFamily(
            "stepstone_store_gauges_age_seconds",
            "Age of the reading the store's series above come from.",
        )
        age.add_metric([], 0.0 if self._at is None else time.monotonic() - self._at)
        yield age
