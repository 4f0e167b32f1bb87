"""Records of the operator extensions (not Cloudflare's): bulk jobs and the audit log.

They cross the storage contract (``Storage``'s bulk and audit methods); the use-cases live in
``stepstone.bulk`` and ``stepstone.audit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# A bulk job's life: queued until a worker claims it, running while one holds its lease (a
# restart lets the lease lapse and another claim resumes at the cursor), then one of the ends.
BULK_QUEUED = "queued"
BULK_RUNNING = "running"
BULK_COMPLETE = "complete"
BULK_CANCELLED = "cancelled"
BULK_FAILED = "failed"
BULK_ENDED = (BULK_COMPLETE, BULK_CANCELLED, BULK_FAILED)

# What happened to one instance a bulk job looked at.
ITEM_DONE = "done"
ITEM_SKIPPED = "skipped"
ITEM_FAILED = "failed"
ITEM_OUTCOMES = (ITEM_DONE, ITEM_SKIPPED, ITEM_FAILED)
# Written just before acting on an instance; replaced by its outcome just after. One still
# pending when a job resumes was being acted on when its server stopped: it is not acted on
# again (a restart must not happen twice) but skipped, saying so.
ITEM_PENDING = "pending"


@dataclass(frozen=True, slots=True)
class InstanceFilter:
    """Which of a workflow's instances a bulk action selects; every given field must match."""

    statuses: tuple[str, ...] = ()
    created_after: int | None = None
    created_before: int | None = None
    id_prefix: str | None = None
    error_name: str | None = None


@dataclass(frozen=True, slots=True)
class BulkJobRecord:
    id: str
    account_id: str
    workflow_name: str
    action: str
    # The filter and the action's options, orjson-encoded (``stepstone.bulk.BulkSpec``).
    spec: bytes
    # Who started it, orjson-encoded (``stepstone.audit.Actor``).
    actor: bytes
    status: str
    matched: int
    done: int
    skipped: int
    failed: int
    cursor: tuple[int, str] | None
    lease_owner: str | None
    lease_expires: int | None
    error: str | None
    created_on: int
    modified_on: int
    finished_on: int | None


@dataclass(frozen=True, slots=True)
class BulkItem:
    instance_id: str
    outcome: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class BulkProgress:
    """One page's worth of a job's progress, written with the cursor in one transaction."""

    items: tuple[BulkItem, ...]
    cursor: tuple[int, str] | None
    finished: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: int
    account_id: str
    action: str
    actor_kind: str
    outcome: str
    actor_name: str | None = None
    actor_id: str | None = None
    workflow_name: str | None = None
    instance_id: str | None = None
    # orjson-encoded: the action's arguments and, on error, its code and message.
    detail: bytes | None = None
    bulk_job_id: str | None = None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Newest first; ``before`` is the ``seq`` cursor of the previous page's last entry."""

    account_id: str
    workflow_name: str | None = None
    instance_id: str | None = None
    since: int | None = None
    until: int | None = None
    actions: tuple[str, ...] = field(default_factory=tuple)
    actor: str | None = None
    bulk_job_id: str | None = None
    before: int | None = None
    limit: int = 50
