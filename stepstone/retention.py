"""Retention: finished instances expire, and a sweeper deletes them so their ids free up.

The stores compute ``expires_at`` when an instance ends (``success_retention`` after
``complete``, ``error_retention`` after ``errored`` or ``terminated``), resolving each value
from the instance, then its version, then the account settings, then the workflow's fallback
(``WorkflowRecord.retention_fallback_ms``), then ``DEFAULT_RETENTION_MS``.

``DEFAULT_RETENTION_MS`` is 7 days, Cloudflare's paid default for Workflows created since
2026-09-10. Workflows registered before Stepstone adopted it were created under 30 days:
storage migration 0004 (SQLite) / 0008 (PostgreSQL) stored that as their fallback, so what
they keep does not change, while account settings still override both.
The sweeper only deletes what has expired, in bounded batches so a backlog never holds the
write lock for long.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from stepstone.engine.clock import Clock, SystemClock

if TYPE_CHECKING:  # the stores import this module for DEFAULT_RETENTION_MS
    from stepstone.storage.base import Storage, VersionRecord

log = logging.getLogger("stepstone.retention")

# The one definition of the default: the stores import it (their SQL takes it as a parameter).
DEFAULT_RETENTION_MS = 7 * 86_400_000
# The default of Workflows created before 2026-09-10 (and Cloudflare's maximum; Stepstone,
# self-hosted, allows longer). The migrations write this value as a literal.
LEGACY_DEFAULT_RETENTION_MS = 30 * 86_400_000
# How often the worker's periodic hook sweeps. Expiry is a promise of "gone after", not "gone
# at", so a minute of lateness is fine and keeps an idle database quiet.
SWEEP_SECONDS = 60.0
BATCH = 500
# A sweep stops after this many batches and lets the next one continue, so one huge backlog
# does not starve the worker's other periodic work.
MAX_BATCHES_PER_SWEEP = 100


def resolve_retention(
    version: VersionRecord | None,
    account: tuple[int | None, int | None],
    instance: tuple[int | None, int | None] = (None, None),
    fallback: int | None = None,
) -> tuple[int, int]:
    """``(success_ms, error_ms)``: instance, then version, then account, then the workflow's
    ``fallback``, then the default."""
    version_values = (
        (version.success_retention_ms, version.error_retention_ms) if version else (None, None)
    )
    resolved = []
    for index in (0, 1):
        for value in (instance[index], version_values[index], account[index], fallback):
            if value is not None:
                resolved.append(value)
                break
        else:
            resolved.append(DEFAULT_RETENTION_MS)
    return resolved[0], resolved[1]


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
