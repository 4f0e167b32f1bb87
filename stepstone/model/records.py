"""The records the stores keep and return, and the exceptions of their contract.

Plain data, decided nowhere here: ``stepstone.storage.base`` is the contract that speaks in
these records, ``stepstone.model.statuses`` the rules that move an instance between statuses.
Times are epoch milliseconds (UTC); JSON values are orjson bytes, stored verbatim.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from stepstone.errors import JurisdictionImmutable

JURISDICTIONS = ("eu", "fedramp", "us")


def check_jurisdiction(stored: str | None, given: str | None) -> None:
    """Refuse a registration that would change a workflow's jurisdiction once set."""
    if stored is not None and given is not None and given != stored:
        raise JurisdictionImmutable(
            f"this workflow's jurisdiction is {stored!r}; it cannot change to {given!r}"
        )


class Fenced(Exception):
    """The claim no longer holds the instance; nothing was written."""


class Conflict(Exception):
    """A compare-and-set found the instance in another status; nothing was written."""


class WorkflowChanged(Exception):
    """A create named a version that is no longer its workflow's current one (registered
    again, or the workflow deleted since it was looked up); nothing was written."""


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    class_name: str
    script_name: str
    limits_steps: int | None = None
    success_retention_ms: int | None = None
    error_retention_ms: int | None = None
    schedules: tuple[str, ...] = ()
    language: str = "python"
    # Cloudflare's ``concurrency.limit``: at most this many instances of the workflow hold a
    # live lease at once; the rest stay queued. None: no cap beyond the workers' own.
    concurrency_limit: int | None = None
    # eu, fedramp or us. A workflow's jurisdiction is set once: a later registration naming
    # another raises ``JurisdictionImmutable`` (10209); one naming none keeps it.
    jurisdiction: str | None = None


@dataclass(frozen=True, slots=True)
class VersionRecord:
    id: str
    workflow_pk: int
    class_name: str
    script_name: str
    created_on: int
    limits_steps: int | None
    success_retention_ms: int | None
    error_retention_ms: int | None
    schedules: tuple[str, ...]
    language: str
    concurrency_limit: int | None = None


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    pk: int
    account_id: str
    name: str
    id: str
    created_on: int
    modified_on: int
    triggered_on: int | None
    version: VersionRecord
    jurisdiction: str | None = None
    # What ended instances keep when nothing else sets a retention (``stepstone.retention``):
    # None is DEFAULT_RETENTION_MS; workflows older than that default keep 30 days.
    retention_fallback_ms: int | None = None


@dataclass(frozen=True, slots=True)
class NewInstance:
    id: str
    params: bytes
    trigger_source: str = "api"
    schedule: bytes | None = None
    success_retention_ms: int | None = None
    error_retention_ms: int | None = None
    # The creator's W3C trace context, kept in the workflow_queued event (never shown).
    traceparent: str | None = None
    # Created already claimed, at epoch 1, by the worker of the process creating it, which runs
    # it at once (``ops.creates.LocalRunner``); the record ``create_instances`` returns still
    # shows it queued, as Cloudflare's create answers.
    lease_owner: str | None = None
    lease_expires: int | None = None

    def queued_data(self, version_id: str) -> bytes:
        """The data of the instance's ``workflow_queued`` event."""
        data: dict[str, Any] = {"versionId": version_id, "trigger": {"source": self.trigger_source}}
        if self.traceparent:
            data["traceparent"] = self.traceparent
        return orjson.dumps(data)

    def as_created(self, pk: int, workflow_pk: int, version_id: str, now: int) -> InstanceRecord:
        """The record of this instance as ``create_instances`` stores it: queued, not begun."""
        return InstanceRecord(
            pk=pk,
            workflow_pk=workflow_pk,
            id=self.id,
            version_id=version_id,
            status="queued",
            trigger_source=self.trigger_source,
            params=self.params,
            schedule=self.schedule,
            created_on=now,
            modified_on=now,
            started_on=None,
            ended_on=None,
            output=None,
            error=None,
            rollback=None,
            control=None,
            paused_at=None,
            success_retention_ms=self.success_retention_ms,
            error_retention_ms=self.error_retention_ms,
        )


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    pk: int
    workflow_pk: int
    id: str
    version_id: str
    status: str
    trigger_source: str
    params: bytes
    schedule: bytes | None
    created_on: int
    modified_on: int
    started_on: int | None
    ended_on: int | None
    output: bytes | None
    error: bytes | None
    rollback: bytes | None
    control: str | None
    paused_at: int | None
    success_retention_ms: int | None
    error_retention_ms: int | None


@dataclass(frozen=True, slots=True)
class InstanceSummary:
    """What an instance's status answer needs beyond its row, read by index, not from the
    whole history: the cost of a status poll does not grow with the steps done."""

    # Distinct (step kind, step name) groups in the history, counted at write time.
    step_count: int
    # The first workflow_queued event's time.
    queued_at: int | None
    # The first workflow_started event's time; only read when the row has no started_on.
    started_at: int | None
    # Whether a workflow_terminated event is in the history; only looked for when terminated.
    terminated: bool


@dataclass(frozen=True, slots=True)
class EventRecord:
    event_id: int
    ts: int
    type: str
    step_kind: str | None
    step_name: str | None
    data: bytes | None


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    ts: int
    data: bytes | None = None
    step_kind: str | None = None
    step_name: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A worker's hold on one instance, valid while ``epoch`` matches the stored one."""

    instance: InstanceRecord
    owner: str
    epoch: int
    wake_seq: int
    # The instance's history, when the claim read it too (PostgreSQL, a first activation);
    # None: the activation reads it.
    history: list[EventRecord] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Release:
    """How an activation ends. ``runnable_at`` None means only an operator or event wakes it."""

    status: str
    runnable_at: int | None = None
    output: bytes | None = None
    error: bytes | None = None
    rollback: bytes | None = None
    events: Sequence[NewEvent] = ()


@dataclass(frozen=True, slots=True)
class Transition:
    """An operator action applied to an instance if its status is still the expected one.

    ``release_worker`` bumps the epoch (fencing out any worker). A live lease stays in place
    until its holder has stopped the activation and calls ``release_stopped`` (or the lease
    expires), so the instance cannot be claimed again while the old activation still runs;
    control listeners are told of the new epoch at once.
    ``reset_history`` deletes the listed event ids (or all when True) together with pending
    events and stream chunks of the given steps (all when True).
    ``closing`` computes, inside the transaction and after ``reset_history``, events to append
    before ``events`` from the instance's log as it then stands (e.g. ending the attempt that
    was running).
    """

    status: str
    runnable_at: int | None = None
    runnable: bool = False
    priority: int = 1
    release_worker: bool = False
    ended: bool = False
    paused_at: int | None = None
    clear_paused_at: bool = False
    control: str | None = None
    error: bytes | None = None
    events: Sequence[NewEvent] = ()
    reset_history: bool | Sequence[int] = False
    reset_streams: bool | Sequence[str] = False
    clear_outcome: bool = False
    closing: Callable[[Sequence[EventRecord]], Sequence[NewEvent]] | None = None
    # With ``reset_history``: keep the events sent and not yet consumed (restart's "replay").
    keep_pending: bool = False


@dataclass(frozen=True, slots=True)
class InstanceQuery:
    """One page of a workflow's instances, newest first unless ``ascending``.

    ``after`` is a keyset cursor ``(created_on, id)``: the page starts strictly after it in the
    chosen order. ``offset`` serves the deprecated page-style listing.
    """

    status: str | None = None
    created_from: int | None = None
    created_to: int | None = None
    after: tuple[int, str] | None = None
    ascending: bool = False
    offset: int = 0
    limit: int = 50


@dataclass(frozen=True, slots=True)
class DeliveredEvent:
    type: str
    payload: bytes
    ts: int


@dataclass(frozen=True, slots=True)
class InstanceLink:
    """The other end of a parent/child link (``step.run_workflow``): a Stepstone extension."""

    workflow: str
    id: str
    status: str
    detached: bool = False


@dataclass(frozen=True, slots=True)
class InstanceLinks:
    parent: InstanceLink | None = None
    children: tuple[InstanceLink, ...] = ()


@dataclass(frozen=True, slots=True)
class ApprovalLinkRecord:
    """A signed, single-use link that sends one event (a Stepstone extension). ``workflow``,
    ``instance_id`` and ``account_id`` are read with it (joined), not stored."""

    id: str
    instance_pk: int
    event_type: str
    expires_at: int
    created_on: int
    title: str | None = None
    used_on: int | None = None
    workflow: str = ""
    instance_id: str = ""
    account_id: str = ""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    name: str
    permissions: tuple[str, ...]
    accounts: tuple[str, ...] | None
    created_on: int
    revoked_on: int | None
    extra: dict[str, Any] = field(default_factory=dict)
