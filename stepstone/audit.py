"""The audit log (a Stepstone extension): who did what to which instances, and how it ended.

Every operator action goes through ``Operations`` with an ``Actor``; the operation records one
entry whatever the outcome (an action refused with a Stepstone error is recorded with its code
and message, then the error goes on to the caller). The log is append-only through every
front-end; only its own retention (``AuditSweeper``) removes entries.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import orjson

from stepstone.engine.clock import Clock, SystemClock
from stepstone.model.actors import Actor
from stepstone.model.ops_records import AuditEntry
from stepstone.storage.base import Storage

log = logging.getLogger("stepstone.audit")

# Kept longer than instances (7 days by default): the question "who terminated this?" is often
# asked after the instance itself has gone.
DEFAULT_AUDIT_RETENTION_MS = 90 * 86_400_000
SWEEP_SECONDS = 300.0
SWEEP_BATCH = 1000
MAX_SWEEP_BATCHES = 100

OK = "ok"
ERROR = "error"


def entry(
    actor: Actor,
    account_id: str,
    action: str,
    now: int,
    *,
    workflow_name: str | None = None,
    instance_id: str | None = None,
    error: BaseException | None = None,
    detail: dict[str, Any] | None = None,
    bulk_job_id: str | None = None,
) -> AuditEntry:
    """One entry; ``error`` (the exception the action raised, if any) sets the outcome."""
    body = dict(detail or {})
    outcome = OK
    if error is not None:
        outcome = ERROR
        code = getattr(error, "code", None)
        body["error"] = {"code": code, "message": str(error) or type(error).__name__}
    return AuditEntry(
        at=now,
        account_id=account_id,
        action=action,
        actor_kind=actor.kind,
        actor_name=actor.name,
        actor_id=actor.id,
        outcome=outcome,
        workflow_name=workflow_name,
        instance_id=instance_id,
        detail=_encode(body) if body else None,
        bulk_job_id=bulk_job_id,
    )


def _encode(body: dict[str, Any]) -> bytes:
    """The detail as JSON, whatever the caller sent: recording an action must never be what
    fails it (orjson refuses integers beyond 64 bits, which a client may send)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, default=str).encode()


def entry_dict(item: AuditEntry) -> dict[str, Any]:
    """The JSON form the API, CLI and dashboard show."""
    from stepstone.views import iso

    return {
        "id": item.seq,
        "at": iso(item.at),
        "action": item.action,
        "actor": {"kind": item.actor_kind, "name": item.actor_name, "id": item.actor_id},
        "workflow": item.workflow_name,
        "instance": item.instance_id,
        "outcome": item.outcome,
        "detail": orjson.loads(item.detail) if item.detail else {},
        "bulk_job_id": item.bulk_job_id,
    }


class AuditSweeper:
    """Deletes entries older than the audit retention; safe in every worker at once."""

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Clock | None = None,
        retention_ms: int = DEFAULT_AUDIT_RETENTION_MS,
    ) -> None:
        self.storage = storage
        self.clock = clock or SystemClock()
        self.retention_ms = retention_ms

    async def sweep(self) -> int:
        cutoff = self.clock.now_ms() - self.retention_ms
        total = 0
        for _ in range(MAX_SWEEP_BATCHES):
            deleted = await self.storage.delete_audit_before(cutoff, SWEEP_BATCH)
            total += deleted
            if deleted < SWEEP_BATCH:
                break
            await asyncio.sleep(0)
        if total:
            log.info("audit: deleted %d entries past retention", total)
        return total
