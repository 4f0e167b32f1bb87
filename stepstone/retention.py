"""Retention's sweeper: finished instances expire, and it deletes them so their ids free up.

Which retention an instance keeps, and the default, are ``stepstone.model.retention``'s rule.
The sweeper only deletes what has expired, in bounded batches so a backlog never holds the
write lock for long.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from stepstone.engine.clock import Clock, SystemClock

if TYPE_CHECKING:
    from stepstone.storage.base import Storage

log = logging.getLogger("stepstone.retention")

# How often the worker's periodic hook sweeps. Expiry is a promise of "gone after", not "gone
# at", so a minute of lateness is fine and keeps an idle database quiet.
SWEEP_SECONDS = 60.0
BATCH = 500
# A sweep stops after this many batches and lets the next one continue, so one huge backlog
# does not starve the worker's other periodic work.
MAX_BATCHES_PER_SWEEP = 100


class RetentionSweeper:
    """Deletes expired instances; safe to run in every worker at once (deletes are atomic)."""

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Clock | None = None,
        batch: int = BATCH,
        max_batches: int = MAX_BATCHES_PER_SWEEP,
    ) -> None:
        self.storage = storage
        self.clock = clock or SystemClock()
        self.batch = batch
        self.max_batches = max_batches

    async def sweep(self) -> int:
        """Delete expired instances in batches; return how many went."""
        total = 0
        for _ in range(self.max_batches):
            deleted = await self.storage.delete_expired(self.clock.now_ms(), self.batch)
            total += deleted
            if deleted < self.batch:
                break
            # Let claims and step writes in between batches.
            await asyncio.sleep(0)
        if total:
            log.info("retention: deleted %d expired instances", total)
        return total
