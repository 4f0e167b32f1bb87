"""The worker side of the in-memory store: claims, leases and fenced writes.

A mixin of ``MemoryStorage`` (``storage/memory.py``). A claim's write holds only while the
instance's epoch and lease owner are both the claim's, as on PostgreSQL (``storage/base.py``
names the epoch; the SQLite store checks only it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from stepstone.model.events import EventType
from stepstone.model.statuses import TERMINAL, Status
from stepstone.storage.appended import AppendSignal
from stepstone.storage.base import (
    Claim,
    DeliveredEvent,
    Fenced,
    InstanceLink,
    InstanceLinks,
    NewEvent,
    Release,
)
from stepstone.storage.event_match import first_match
from stepstone.storage.memory_ops import MemoryOps
from stepstone.storage.memory_rows import ChildLink, InstanceRow, own
from stepstone.storage.signals import Signals


class MemoryWorker(MemoryOps, Signals):
    appended: AppendSignal

    def _after_write(self) -> None:
        """Wake the workers if the write just made woke a parent (its child ended)."""
        t = self._db
        if t.parent_woken:
            t.parent_woken = False
            self._fire_wake()

    def _fenced(self, claim: Claim) -> InstanceRow:
        row = self._db.instances.get(claim.instance.pk)
        if row is None or row.epoch != claim.epoch or row.lease_owner != claim.owner:
            raise Fenced(claim.instance.id)
        return row

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
        t = self._db
        if limit <= 0 or (workflow_pks is not None and not workflow_pks):
            return []
        allowed = limit
        if max_running is not None:
            allowed = min(limit, max(0, max_running - t.running(None, now)))
            if allowed == 0:
                return []
        caps = t.caps(workflow_pks)
        rooms = {pk: cap - t.running(pk, now) for pk, cap in caps.items()}
        candidates = [r for r in t.scheduled_rows(workflow_pks) if r.claimable(now)]
        # Woken before new, oldest first; ties in pk order, as the SQL stores' index has them.
        candidates.sort(key=lambda r: (r.priority, r.runnable_at, r.pk))
        picked: list[InstanceRow] = []
        for row in candidates:
            if len(picked) == allowed:
                break
            room = rooms.get(row.workflow_pk)
            if room is not None:
                if room <= 0:
                    continue
                rooms[row.workflow_pk] = room - 1
            picked.append(row)
        claims = []
        for row in sorted(picked, key=lambda r: r.pk):
            old = row.status
            row.lease_owner, row.lease_expires = owner, now + lease_ms
            row.epoch += 1
            if row.status in (Status.QUEUED, Status.WAITING):
                row.status = Status.RUNNING
            if row.started_on is None:
                row.started_on = now
            row.modified_on = now
            t.status_changed(row, old)
            claims.append(Claim(row.record(), owner, row.epoch, row.wake_seq))
        return claims

    async def renew_leases(
        self, owner: str, claims: Sequence[Claim], now: int, lease_ms: int
    ) -> dict[int, str | None]:
        t = self._db
        held: dict[int, str | None] = {}
        for claim in claims:
            row = t.instances.get(claim.instance.pk)
            if row is None or row.epoch != claim.epoch or row.lease_owner != owner:
                held[claim.instance.pk] = None
                continue
            row.lease_expires = now + lease_ms
            held[claim.instance.pk] = row.status
        return held

    async def record_progress(self, claim: Claim, events: Sequence[NewEvent]) -> str:
        row = self._fenced(claim)
        self._db.add_events(row, events)
        self.appended.fire(row.pk)
        return row.status

    def record_progress_nowait(self, claim: Claim, events: Sequence[NewEvent]) -> None:
        """Written at once: nothing here is worth deferring. A fenced claim's events are
        dropped, as a SQL store drops them when its queue is flushed."""
        try:
            row = self._fenced(claim)
        except Fenced:
            return  # the claim's own next write fails the same way
        self._db.add_events(row, events)
        self.appended.fire(row.pk)

    async def set_active_status(self, claim: Claim, status: str) -> None:
        row = self._fenced(claim)
        old, row.status = row.status, status
        self._db.status_changed(row, old)
        self._after_write()

    async def record_stream_chunk(
        self, claim: Claim, step_name: str, chunk_no: int, data: bytes
    ) -> None:
        row = self._fenced(claim)
        if chunk_no == 0:
            row.streams.pop(step_name, None)
        row.streams.setdefault(step_name, {})[chunk_no] = own(data)

    async def consume_event(
        self,
        claim: Claim,
        event_type: str,
        completion: NewEvent,
        match: Mapping[str, Any] | None = None,
    ) -> DeliveredEvent | None:
        row = self._fenced(claim)
        buffered = [
            (seq, payload, ts) for seq, kind, payload, ts in row.pending if kind == event_type
        ]
        found = first_match(buffered, match)
        if found is None:
            return None
        seq, payload, ts = found
        delivered = DeliveredEvent(event_type, payload, ts)
        data = orjson.loads(completion.data or b"{}")
        data["event"] = {
            "type": event_type,
            "payload": orjson.Fragment(payload),
            "timestamp": ts,
        }
        recorded = NewEvent(
            completion.type,
            completion.ts,
            orjson.dumps(data),
            completion.step_kind,
            completion.step_name,
        )
        row.pending[:] = [p for p in row.pending if p[0] != seq]
        self._db.add_events(row, [recorded])
        self.appended.fire(row.pk)
        return delivered

    async def release_instance(self, claim: Claim, release: Release, now: int) -> str:
        t, r = self._db, release
        row = self._fenced(claim)
        status, runnable_at, paused_at = r.status, r.runnable_at, None
        if status == Status.WAITING and row.status == Status.WAITING_FOR_PAUSE:
            status, runnable_at, paused_at = Status.PAUSED, None, now
        elif status == Status.PAUSED:
            runnable_at, paused_at = None, now
        if status == Status.WAITING and row.wake_seq != claim.wake_seq:
            runnable_at = now  # an event was delivered since the claim
        ended = status in TERMINAL
        expires_at = t.expiry(row, status, now) if ended else None
        old = row.status
        row.status = status
        t.schedule(row, runnable_at)
        row.priority = 0
        row.lease_owner = row.lease_expires = None
        row.modified_on = now
        if paused_at is not None:
            row.paused_at = paused_at
        row.control = None
        if r.output is not None:
            row.output = own(r.output)
        if r.error is not None:
            row.error = own(r.error)
        if r.rollback is not None:
            row.rollback = own(r.rollback)
        if ended:
            row.ended_on = now
        row.expires_at = expires_at
        t.status_changed(row, old)
        events = list(r.events)
        if status == Status.PAUSED and r.status != Status.PAUSED:
            events.append(NewEvent(EventType.WORKFLOW_PAUSED, now))
        t.add_events(row, events)
        # An instance that ended leaves nothing to claim or to wait for: only watchers hear.
        if ended:
            self._fire_change()
        else:
            self._fire_wake()
        self._after_write()
        self.appended.fire(row.pk)
        return status

    async def release_stopped(self, owner: str, instance_pk: int, epoch: int) -> None:
        row = self._db.instances.get(instance_pk)
        if row is not None and row.epoch == epoch and row.lease_owner == owner:
            row.lease_owner = row.lease_expires = None
        self._fire_wake()

    async def link_child(
        self, claim: Claim, child_pk: int, *, detached: bool = False
    ) -> str | None:
        t = self._db
        self._fenced(claim)
        t.child_links.setdefault(child_pk, ChildLink(claim.instance.pk, detached))
        child = t.instances.get(child_pk)
        return None if child is None else child.status

    async def instance_links(self, instance_pk: int) -> InstanceLinks:
        t = self._db

        def link(pk: int, detached: bool) -> InstanceLink | None:
            row = t.instances.get(pk)
            if row is None or row.workflow_pk not in t.workflows:
                return None
            return InstanceLink(t.workflows[row.workflow_pk].name, row.id, row.status, detached)

        own = t.child_links.get(instance_pk)
        parent = None if own is None else link(own.parent_pk, False)
        children = [
            link(child_pk, entry.detached)
            for child_pk, entry in sorted(t.child_links.items())
            if entry.parent_pk == instance_pk
        ]
        return InstanceLinks(parent, tuple(c for c in children if c is not None))

    async def next_wake_at(self, workflow_pks: Sequence[int] | None) -> int | None:
        t = self._db
        if workflow_pks is not None and not workflow_pks:
            return None
        full = {pk for pk, cap in t.caps(workflow_pks).items() if t.running(pk, None) >= cap}
        times = [
            r.runnable_at
            for r in t.scheduled_rows(workflow_pks)
            if r.runnable_at is not None and r.lease_owner is None and r.workflow_pk not in full
        ]
        return min(times, default=None)

    async def concurrency_usage(self, workflow_pk: int, now: int) -> tuple[int, int]:
        queued = sum(1 for r in self._rows_of(workflow_pk) if r.claimable(now))
        return self._db.running(workflow_pk, now), queued

    async def expire_leases(self, owner_prefix: str | None, now: int) -> int:
        count = 0
        for row in self._db.instances.values():
            if row.lease_owner is not None and (
                owner_prefix is None or row.lease_owner.startswith(owner_prefix)
            ):
                row.lease_expires = now - 1
                count += 1
        self._fire_wake()
        return count
