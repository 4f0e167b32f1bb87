"""Sending the outbox: one of each worker's periodic jobs, never in the engine's way.

Each tick leases due deliveries (a lease per row: two servers never both send it), POSTs
them concurrently with a bounded timeout and records every attempt. A 2xx is delivered;
anything else (a refused connection, a timeout, a 500, a receiver killed mid-request) is
retried with exponential backoff until ``max_attempts``, then the row is failed and waits
for an operator's re-send. A sender that dies mid-delivery leaves its lease to lapse and
another tick sends the row again: delivery is at least once, and the ``Stepstone-Delivery``
header lets a receiver drop duplicates. Delivered and failed rows, with their attempts, are
deleted ``retention_ms`` (7 days by default) after they finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from stepstone.engine.clock import Clock, SystemClock
from stepstone.model.version import VERSION
from stepstone.model.webhooks import WAITING, AttemptLog, DeliveryJob
from stepstone.storage.base import Storage
from stepstone.webhooks.signing import HEADER, sign

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("stepstone.webhooks")

# How often each worker looks at the outbox; a transition's notice leaves within about this.
TICK_SECONDS = 1.0
LEASE_MS = 30_000
TIMEOUT_S = 10.0
BATCH = 20
MAX_ATTEMPTS = 12
BASE_DELAY_MS = 2_000
MAX_DELAY_MS = 3_600_000
# Delivered and failed deliveries are deleted this long after they finished (pending ones are
# kept whatever their age), so the outbox does not grow forever; like the instances' default.
DELIVERY_RETENTION_MS = 7 * 86_400_000
# Pruning runs at most this often, in batches, so an idle outbox costs one indexed read a minute.
PRUNE_SECONDS = 60.0
PRUNE_BATCH = 500
MAX_PRUNE_BATCHES = 20

_STATUS = {"complete": "complete", "paused": "paused", "terminated": "terminated"}


def delivery_id(pk: int) -> str:
    return f"whd_{pk}"


def backoff_ms(attempt: int, base_ms: int = BASE_DELAY_MS, cap_ms: int = MAX_DELAY_MS) -> int:
    """The wait after failed attempt ``attempt`` (1-based): base, 2*base, 4*base... capped."""
    return int(min(cap_ms, base_ms * 2 ** max(0, attempt - 1)))


def body_of(job: DeliveryJob) -> bytes:
    from stepstone.views import iso

    error = orjson.loads(job.error) if job.error else None
    if job.event in _STATUS:
        status = _STATUS[job.event]
    elif job.event == WAITING:
        status = "waiting"
    else:  # errored, or rolledBack which ends errored or terminated
        status = "errored" if job.event == "errored" or error else "terminated"
    return orjson.dumps(
        {
            "id": delivery_id(job.pk),
            "event": job.event,
            "workflow": job.workflow_name,
            "instance": job.instance_id,
            "status": status,
            "error": error,
            "time": iso(job.at),
            "attempt": job.attempts,
        }
    )


class WebhookDispatcher:
    def __init__(
        self,
        storage: Storage,
        *,
        clock: Clock | None = None,
        owner: str | None = None,
        lease_ms: int = LEASE_MS,
        timeout_s: float = TIMEOUT_S,
        batch: int = BATCH,
        max_attempts: int = MAX_ATTEMPTS,
        base_delay_ms: int = BASE_DELAY_MS,
        transport: httpx.AsyncBaseTransport | None = None,
        retention_ms: int = DELIVERY_RETENTION_MS,
    ) -> None:
        if retention_ms <= 0:
            raise ValueError("retention_ms must be positive")
        self.storage = storage
        self.clock = clock or SystemClock()
        self.owner = owner or f"hooks-{uuid.uuid4().hex[:12]}"
        self.lease_ms = lease_ms
        self.timeout_s = timeout_s
        self.batch = batch
        self.max_attempts = max_attempts
        self.base_delay_ms = base_delay_ms
        self._transport = transport
        self.retention_ms = retention_ms
        self._started = False
        self._pruned_at: int | None = None

    async def tick(self) -> int:
        """Queue overdue waits, then send what is due; return how many were attempted."""
        if not self._started:
            self._started = True
            if self.storage.sole_worker_lock():
                # No other process can hold a lease on this database: the holder died.
                await self.storage.release_delivery_leases()
        now = self.clock.now_ms()
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_SECONDS * 1000:
            self._pruned_at = now
            await self.prune(now)
        await self.storage.enqueue_overdue_waits(now)
        jobs = await self.storage.claim_deliveries(self.owner, now, self.lease_ms, self.batch)
        if not jobs:
            return 0
        # Imported on the first delivery: httpx (with the rich console its CLI brings) is about
        # 10 MB of a process that may never deliver a webhook.
        import httpx

        async with httpx.AsyncClient(timeout=self.timeout_s, transport=self._transport) as client:
            await asyncio.gather(*(self._send(client, job) for job in jobs))
        return len(jobs)

    async def prune(self, now: int) -> int:
        """Delete what finished more than ``retention_ms`` before ``now``; return how many.
        A huge backlog goes over several sweeps, never holding the store for long."""
        total = 0
        for _ in range(MAX_PRUNE_BATCHES):
            deleted = await self.storage.prune_deliveries(now - self.retention_ms, PRUNE_BATCH)
            total += deleted
            if deleted < PRUNE_BATCH:
                break
            await asyncio.sleep(0)
        if total:
            log.info("webhooks: pruned %d finished deliveries", total)
        return total

    async def _send(self, client: httpx.AsyncClient, job: DeliveryJob) -> None:
        import httpx  # loaded by tick already

        body = body_of(job)
        started = self.clock.now_ms()
        began = time.monotonic()
        code: int | None = None
        error: str | None = None
        try:
            response = await client.post(job.url, content=body, headers=self._headers(job, body))
            code = response.status_code
            if not 200 <= code < 300:
                error = f"HTTP {code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration = int((time.monotonic() - began) * 1000)
        delivered = error is None
        retry_at = None
        if not delivered and job.attempts < self.max_attempts:
            retry_at = self.clock.now_ms() + backoff_ms(job.attempts, self.base_delay_ms)
        attempt = AttemptLog(started, duration, code, error)
        kept = await self.storage.finish_delivery(
            job.pk, self.owner, attempt, delivered=delivered, retry_at=retry_at
        )
        if not delivered:
            level = logging.WARNING if retry_at is None else logging.INFO
            log.log(
                level,
                "webhook %s (%s of %s/%s) to %s failed on attempt %d: %s%s",
                delivery_id(job.pk),
                job.event,
                job.workflow_name,
                job.instance_id,
                job.url,
                job.attempts,
                error,
                "" if retry_at is not None else "; giving up (re-send it to try again)",
            )
        if not kept:
            log.info("webhook %s: lease lost while sending; another worker has it", job.pk)

    def _headers(self, job: DeliveryJob, body: bytes) -> dict[str, Any]:
        return {
            "Content-Type": "application/json",
            "User-Agent": f"stepstone/{VERSION}",
            HEADER: sign(job.secret, body, self.clock.now_ms() // 1000),
            "Stepstone-Delivery": delivery_id(job.pk),
            "Stepstone-Event": job.event,
            "Stepstone-Attempt": str(job.attempts),
        }
