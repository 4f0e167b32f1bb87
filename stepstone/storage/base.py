"""The storage contract: every durable operation of Stepstone, named after the domain.

The engine, the operations layer and the API import only this module. Each backend (SQLite,
PostgreSQL, and the plain-Python ``memory://`` store) implements ``Storage`` and passes one
contract suite.

Times are epoch milliseconds (UTC). JSON values cross the contract already encoded (orjson
bytes) where they are stored verbatim, so no backend re-encodes a payload.

Fencing: a worker acts on an instance only through a ``Claim``. Every write made with a claim
checks, in the same transaction, that the instance's ``epoch`` still equals the claim's; any
operator action that takes the instance away from the worker (terminate, restart, delete, a
lease taken over after expiry) bumps the epoch, so a stale worker's write raises ``Fenced`` and
records nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from stepstone.model.ops_records import (
    AuditEntry,
    AuditQuery,
    BulkItem,
    BulkJobRecord,
    BulkProgress,
    InstanceFilter,
)
from stepstone.model.records import (
    JURISDICTIONS,
    ApprovalLinkRecord,
    Claim,
    Conflict,
    DeliveredEvent,
    EventRecord,
    Fenced,
    InstanceLink,
    InstanceLinks,
    InstanceQuery,
    InstanceRecord,
    InstanceSummary,
    NewEvent,
    NewInstance,
    Release,
    TokenRecord,
    Transition,
    VersionRecord,
    WorkflowChanged,
    WorkflowDefinition,
    WorkflowRecord,
    check_jurisdiction,
)
from stepstone.model.webhooks import AttemptLog, DeliveryJob, DeliveryRecord, WebhookRecord
from stepstone.storage.appended import AppendSignal

# The contract speaks in the records of stepstone.model.records: importers may take them from
# here, beside the contract, or from the model.
__all__ = [
    "JURISDICTIONS",
    "ApprovalLinkRecord",
    "Claim",
    "Conflict",
    "DeliveredEvent",
    "EventRecord",
    "Fenced",
    "InstanceLink",
    "InstanceLinks",
    "InstanceQuery",
    "InstanceRecord",
    "InstanceSummary",
    "NewEvent",
    "NewInstance",
    "Release",
    "SeparateLookAhead",
    "Storage",
    "TokenRecord",
    "Transition",
    "VersionRecord",
    "WorkflowChanged",
    "WorkflowDefinition",
    "WorkflowRecord",
    "check_jurisdiction",
]


class SeparateLookAhead:
    """``claim_and_next_wake`` as two calls, for stores whose calls cost no round trip."""

    async def claim_and_next_wake(
        self: Storage,
        owner: str,
        limit: int,
        now: int,
        lease_ms: int,
        workflow_pks: Sequence[int] | None,
        *,
        max_running: int | None = None,
    ) -> tuple[list[Claim], int | None]:
        claims = await self.claim_runnable(
            owner, limit, now, lease_ms, workflow_pks, max_running=max_running
        )
        if len(claims) >= limit:
            return claims, None
        return claims, await self.next_wake_at(workflow_pks)


class Storage(Protocol):
    """Every durable operation. Unless stated, an operation is one atomic transaction."""

    url: str
    # Whether wake-ups announce other processes' commits too, or none can matter: False (the
    # portable PostgreSQL mode) has workers poll for them, backing off while idle.
    push_wakes: bool
    # Fired after each commit of this process that appends events to an instance's log, and
    # polled for other processes' (see storage/appended.py): what event streams wait on.
    appended: AppendSignal

    async def open(self) -> None:
        """Connect and apply pending migrations. Idempotent."""

    async def close(self) -> None:
        """Flush queued writes and disconnect."""

    def sole_worker_lock(self) -> bool:
        """Try to become the only worker on this database (held until close); True if so.

        An embedded SQLite store can know it; a shared PostgreSQL store answers False.
        """

    def add_wake_listener(self, callback: Any) -> None:
        """Call ``callback()`` (from any thread) after a commit that may make work runnable."""

    def add_change_listener(self, callback: Any) -> None:
        """Call ``callback()`` (from any thread) after a commit that may change an instance's
        status: every wake, and the end of an instance."""

    def add_control_listener(self, callback: Any) -> None:
        """Call ``callback(instance_pk, epoch)`` after a commit that takes an instance away
        from whichever worker holds it (terminate, restart, delete): every claim of that
        instance with an older epoch (every claim, when ``epoch`` is None: the instance is
        gone) is void. Within the process this comes straight after the commit; a shared store
        also tells other processes (PostgreSQL: a notification). Delivery may repeat."""

    # --- workflows and versions -------------------------------------------------------------

    async def register_workflow(
        self, account_id: str, name: str, definition: WorkflowDefinition, now: int
    ) -> WorkflowRecord:
        """Create the workflow if needed and always add a new version, which becomes current.

        Existing instances keep the version they were created with.
        """

    async def get_workflow(self, account_id: str, name: str) -> WorkflowRecord | None: ...

    async def list_workflows(
        self, account_id: str | None, search: str | None, offset: int, limit: int
    ) -> tuple[list[WorkflowRecord], int]:
        """A page of workflows ordered by name, and the total; ``search`` is a substring."""

    async def delete_workflow(self, account_id: str, name: str) -> bool:
        """Remove the workflow, its versions, its instances and all their data."""

    async def list_versions(
        self, workflow_pk: int, offset: int, limit: int
    ) -> tuple[list[VersionRecord], int]:
        """A page of versions, newest first, and the total."""

    async def get_version(self, workflow_pk: int, version_id: str) -> VersionRecord | None: ...

    async def count_instances(self, workflow_pk: int) -> dict[str, int]:
        """Instance counts by status."""

    # --- instances -------------------------------------------------------------------------

    async def create_instances(
        self,
        workflow_pk: int,
        version_id: str,
        items: Sequence[NewInstance],
        now: int,
        *,
        skip_existing: bool,
    ) -> list[InstanceRecord]:
        """Insert queued instances, each with its ``workflow_queued`` event; return the
        created instances as stored (a worker may claim them the moment this returns).

        Atomic: with ``skip_existing`` an id already present is skipped and left out of the
        result; without it an existing id raises ``InstanceAlreadyExists`` and nothing is
        written. ``version_id`` must still be the workflow's current version, checked in the
        same transaction: else ``WorkflowChanged`` and nothing is written (so a caller may
        keep the workflow it looked up, and look again only then).
        """

    async def get_instance(self, workflow_pk: int, instance_id: str) -> InstanceRecord | None: ...

    async def list_instances(self, workflow_pk: int, query: InstanceQuery) -> list[InstanceRecord]:
        """One page per ``query``, served from an index at any depth."""

    async def load_events(
        self, instance_pk: int, after_event_id: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        """The instance's history after ``after_event_id``, oldest first."""

    async def get_workflow_instance(
        self, account_id: str, workflow_name: str, instance_id: str
    ) -> tuple[WorkflowRecord, InstanceRecord | None] | None:
        """The workflow (None if there is none by that name) and its instance by id, if it
        has one: one read."""

    async def get_instance_summary(
        self, account_id: str, workflow_name: str, instance_id: str
    ) -> tuple[bool, tuple[InstanceRecord, InstanceSummary] | None]:
        """Whether the workflow exists, and the instance with its summary if it has one by
        that id: one read (a status poll's), costing the same at any history length."""

    async def load_step_events(
        self, instance_pk: int, step_name: str, kinds: Sequence[str]
    ) -> list[EventRecord]:
        """The events of the steps called ``step_name`` of the given kinds, oldest first, by
        index: what one step's answer needs, not the whole history."""

    def read_stream(self, instance_pk: int, step_name: str, chunks: int) -> AsyncIterator[bytes]:
        """The first ``chunks`` chunks of a byte-stream step output, in order, read lazily."""

    async def transition_instance(
        self, instance_pk: int, expected_status: str, transition: Transition, now: int
    ) -> None:
        """Apply an operator action atomically; raise ``Conflict`` if the status moved."""

    async def delete_instances(self, workflow_pk: int, instance_ids: Sequence[str]) -> list[str]:
        """Delete instances and all their data; return the ids that existed. Fences workers."""

    async def deliver_event(
        self, instance_pk: int, event_type: str, payload: bytes, now: int
    ) -> bool:
        """Buffer an event (FIFO per type) and make a waiting instance runnable now.

        Raises ``CannotSendEvent`` if the instance is terminal; returns False if it is gone.
        Either way nothing is written.
        """

    # --- workers ---------------------------------------------------------------------------

    async def claim_runnable(
        self,
        owner: str,
        limit: int,
        now: int,
        lease_ms: int,
        workflow_pks: Sequence[int] | None,
        *,
        max_running: int | None = None,
    ) -> list[Claim]:
        """Lease up to ``limit`` runnable instances (woken before new, oldest first).

        Runnable: ``runnable_at <= now`` and no live lease. Each claim bumps the epoch, so an
        expired holder is fenced out. Queued and waiting instances become ``running``.
        ``max_running`` caps the live leases of all workers together, claims included; claims
        that pass it are serialised so that concurrent workers cannot overshoot it.
        A workflow whose current version has a ``concurrency_limit`` gets no more live leases
        than that, however many workers claim at once (claims of one capped workflow are
        serialised); its instances wait, oldest first, for a slot. While no capped workflow is
        in scope a claim is the same single statement as without limits (SQLite adds one read
        of the capped workflows, in-process and served by the workflows table).
        """

    async def claim_and_next_wake(
        self,
        owner: str,
        limit: int,
        now: int,
        lease_ms: int,
        workflow_pks: Sequence[int] | None,
        *,
        max_running: int | None = None,
    ) -> tuple[list[Claim], int | None]:
        """``claim_runnable``, then ``next_wake_at`` over what it left, for a worker's loop;
        one round trip where the store can. The wake-up is None also when ``limit`` instances
        were claimed: the caller claims again at once. ``SeparateLookAhead`` is the plain form.
        """

    async def renew_leases(
        self, owner: str, claims: Sequence[Claim], now: int, lease_ms: int
    ) -> dict[int, str | None]:
        """Extend held leases; return each claim's instance pk mapped to its current status,
        or None where the claim no longer holds it."""

    async def record_progress(self, claim: Claim, events: Sequence[NewEvent]) -> str:
        """Append history events, fenced; return the instance's current status.

        This returns after the commit that holds them, which a store may make durable only
        later (SQLite at ``synchronous=FULL`` syncs in the background); ``sync`` waits for
        that. Every other write returns once durable.
        """

    async def sync(self) -> None:
        """Return once every write committed so far is durable.

        The worker calls it before running user code, so that no side effect ever depends on
        a recorded result that a power cut could still take back.
        """

    def record_progress_nowait(self, claim: Claim, events: Sequence[NewEvent]) -> None:
        """Queue history events without waiting for their commit.

        Ordering holds: a later write of the same claim commits with or after these. Used for
        an attempt's start, which is worth recording but not worth an fsync of its own.
        """

    async def set_active_status(self, claim: Claim, status: str) -> None:
        """Change the status of a held instance (e.g. to ``rollingBack``), fenced."""

    async def record_stream_chunk(
        self, claim: Claim, step_name: str, chunk_no: int, data: bytes
    ) -> None:
        """Store one chunk of a byte-stream output, fenced; chunk 0 first drops any chunks
        an earlier, interrupted attempt left for the step."""

    async def consume_event(
        self,
        claim: Claim,
        event_type: str,
        completion: NewEvent,
        match: Mapping[str, Any] | None = None,
    ) -> DeliveredEvent | None:
        """Take the oldest buffered event of ``event_type`` and record ``completion`` with
        the event added to its data, in one fenced transaction; None if none is buffered.
        With ``match`` (a Stepstone extension) only an event whose payload matches
        (``storage.event_match``) is taken; the others stay buffered, in order."""

    async def link_child(
        self, claim: Claim, child_pk: int, *, detached: bool = False
    ) -> str | None:
        """Record, fenced on the parent's claim, that ``child_pk`` is its child; return the
        child's status (None if it is gone). From this commit on, the transaction that ends the
        child (complete, errored, terminated) also makes the parent runnable, as a delivered
        event does. Idempotent."""

    async def instance_links(self, instance_pk: int) -> InstanceLinks:
        """The instance's parent and children, oldest child first."""

    async def signing_key(self, name: str, candidate: bytes) -> bytes:
        """The stored secret called ``name``; stores ``candidate`` first if there is none."""

    async def create_approval_link(self, link: ApprovalLinkRecord) -> None: ...

    async def get_approval_link(self, link_id: str) -> ApprovalLinkRecord | None:
        """The link with its instance's workflow, id and account; None if unknown or if its
        instance is gone."""

    async def use_approval_link(self, link_id: str, now: int) -> bool:
        """Mark the link used; False (writing nothing) if it was used already. Atomic, so of
        two submissions at once exactly one gets True."""

    async def release_instance(self, claim: Claim, release: Release, now: int) -> str:
        """End an activation, fenced; return the status stored.

        A release to ``waiting`` while a pause was requested stores ``paused``; an event
        delivered since the claim makes the instance runnable now whatever ``runnable_at``
        says.
        """

    async def release_stopped(self, owner: str, instance_pk: int, epoch: int) -> None:
        """Hand back the lease ``owner`` still holds on an instance an operator took away at
        ``epoch``, once its activation has stopped: the instance may be claimed now. Does
        nothing unless the row is still at ``epoch`` and leased by ``owner``."""

    async def next_wake_at(self, workflow_pks: Sequence[int] | None) -> int | None:
        """The earliest ``runnable_at`` among instances not leased, or None; instances of a
        workflow whose leases fill its ``concurrency_limit`` are left out (a slot opens only
        with a release, which wakes the workers)."""

    async def concurrency_usage(self, workflow_pk: int, now: int) -> tuple[int, int]:
        """``(running, queued)`` as a concurrency limit sees them: live leases, and instances
        runnable now but not leased (waiting for a slot, or for a worker)."""

    async def expire_leases(self, owner_prefix: str | None, now: int) -> int:
        """Drop leases (all, or those whose owner starts with the prefix) so they can be
        claimed now; for an embedded store that knows it is the only worker."""

    # --- retention, settings, tokens -------------------------------------------------------

    async def get_account_settings(self, account_id: str) -> tuple[int | None, int | None]: ...

    async def put_account_settings(
        self, account_id: str, success_retention_ms: int | None, error_retention_ms: int | None
    ) -> None: ...

    async def delete_expired(self, now: int, limit: int) -> int:
        """Delete up to ``limit`` instances whose retention has passed; return how many."""

    async def create_token(self, token: TokenRecord, token_hash: str) -> None: ...

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        """The unrevoked token with that hash, or None."""

    async def list_tokens(self) -> list[TokenRecord]: ...

    async def revoke_token(self, token_id: str, now: int) -> bool: ...

    # --- operator extensions: bulk jobs and the audit log (stepstone.bulk, stepstone.audit) -

    async def select_instances(
        self, workflow_pk: int, where: InstanceFilter, after: tuple[int, str] | None, limit: int
    ) -> list[InstanceRecord]:
        """Instances matching ``where``, oldest first by ``(created_on, id)`` after ``after``."""

    async def count_selected(self, workflow_pk: int, where: InstanceFilter) -> int: ...

    async def create_bulk_job(self, job: BulkJobRecord) -> None: ...

    async def get_bulk_job(self, account_id: str, job_id: str) -> BulkJobRecord | None: ...

    async def list_bulk_jobs(
        self, account_id: str, workflow_name: str | None, limit: int
    ) -> list[BulkJobRecord]:
        """Newest first."""

    async def claim_bulk_job(self, owner: str, now: int, lease_ms: int) -> BulkJobRecord | None:
        """Lease one queued job, or a running one whose lease lapsed (its server died)."""

    async def advance_bulk_job(
        self, job_id: str, owner: str, progress: BulkProgress, now: int, lease_ms: int
    ) -> bool:
        """Record outcomes (an instance already recorded keeps its first outcome and is not
        counted twice; a ``pending`` one takes its outcome), move the cursor, renew the lease,
        and end the job if ``progress.finished``; all in one transaction. False if ``owner``
        lost the lease or the job was cancelled: nothing is written."""

    async def recorded_bulk_items(self, job_id: str, instance_ids: Sequence[str]) -> dict[str, str]:
        """The outcome (or ``pending``) the job has recorded for each of ``instance_ids``."""

    async def list_bulk_items(
        self, job_id: str, outcome: str | None, after: str | None, limit: int
    ) -> list[BulkItem]:
        """By instance id, after ``after``."""

    async def cancel_bulk_job(self, account_id: str, job_id: str, now: int) -> bool:
        """End a job that has not ended; False if it had."""

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None: ...

    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]: ...

    async def delete_audit_before(self, at: int, limit: int) -> int:
        """Delete up to ``limit`` entries recorded before ``at``; return how many."""

    # --- lifecycle webhooks (stepstone.webhooks, a Stepstone extension) -------------------
    # The outbox row is written by the transaction that changes an instance's status.

    async def put_webhooks(
        self, workflow_pk: int, hooks: Sequence[WebhookRecord], *, replace_source: str | None
    ) -> None:
        """Insert or update hooks by id; with ``replace_source``, first drop that source's
        hooks of the workflow (the project config's set replaces the last one)."""

    async def list_webhooks(self, workflow_pk: int) -> list[WebhookRecord]: ...

    async def delete_webhook(self, workflow_pk: int, hook_id: str) -> bool:
        """Delete a hook with its deliveries; False if there was none."""

    async def enqueue_overdue_waits(self, now: int) -> int:
        """Queue one delivery per wait_for_event outlasting a hook's threshold."""

    async def claim_deliveries(
        self, owner: str, now: int, lease_ms: int, limit: int
    ) -> list[DeliveryJob]:
        """Lease due pending deliveries (one attempt counted each), oldest due first."""

    async def finish_delivery(
        self,
        delivery_pk: int,
        owner: str,
        attempt: AttemptLog,
        *,
        delivered: bool,
        retry_at: int | None,
    ) -> bool:
        """Record an attempt and its outcome (``retry_at`` None and not delivered: failed for
        good); False, writing nothing, if ``owner`` no longer holds the lease."""

    async def release_delivery_leases(self) -> int:
        """Drop every delivery lease (a sole worker starting: the holder died)."""

    async def prune_deliveries(self, before: int, limit: int) -> int:
        """Delete up to ``limit`` delivered or failed deliveries (with their attempts) that
        finished before ``before``, oldest first; return how many. Pending ones stay."""

    async def list_deliveries(
        self, workflow_pk: int, hook_id: str | None, state: str | None, limit: int
    ) -> list[DeliveryRecord]:
        """Newest first, each with its attempts."""

    async def resend_delivery(self, workflow_pk: int, delivery_pk: int, now: int) -> bool:
        """Make a delivery pending and due now, whatever its state; False if unknown."""
