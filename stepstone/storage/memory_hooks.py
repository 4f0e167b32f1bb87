"""Lifecycle webhooks in the in-memory store (a Stepstone extension), and the base the
in-memory store's parts share: its ``Tables``, open or not.

The outbox rows are written by ``Tables.status_changed``, inside whichever call changes an
instance's status, as the SQL stores' trigger writes them inside the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from stepstone.model.events import EventType
from stepstone.model.statuses import Status
from stepstone.model.webhooks import (
    DELIVERED,
    FAILED,
    PENDING,
    WAITING,
    AttemptLog,
    DeliveryJob,
    DeliveryRecord,
    WebhookRecord,
)
from stepstone.storage.memory_rows import DeliveryRow, HookRow, InstanceRow, Tables, page


class MemoryHooks:
    _tables: Tables | None = None

    @property
    def _db(self) -> Tables:
        if self._tables is None:
            raise RuntimeError("storage is not open")
        return self._tables

    def _require_open(self) -> None:
        self._db  # noqa: B018 - raises when closed

    def _rows_of(self, workflow_pk: int) -> list[InstanceRow]:
        t = self._db
        return [t.instances[pk] for pk in t.instance_ids.get(workflow_pk, {}).values()]

    async def put_webhooks(
        self, workflow_pk: int, hooks: Sequence[WebhookRecord], *, replace_source: str | None
    ) -> None:
        t = self._db
        if replace_source is not None:
            for hook in [
                h
                for h in t.hooks.values()
                if h.workflow_pk == workflow_pk and h.source == replace_source
            ]:
                self._drop_hook(hook)
        for h in hooks:
            pk = t.hook_ids.get(h.id)
            if pk is not None:
                # By id, whichever workflow holds it; source and creation time stay.
                row = t.hooks[pk]
                row.url, row.events, row.secret = h.url, tuple(h.events), h.secret
                row.wait_threshold_ms = h.wait_threshold_ms
                continue
            pk = t.next_id("webhooks")
            t.hooks[pk] = HookRow(
                pk,
                workflow_pk,
                h.id,
                h.url,
                tuple(h.events),
                h.secret,
                h.wait_threshold_ms,
                h.source,
                h.created_on,
            )
            t.hook_ids[h.id] = pk

    def _drop_hook(self, hook: HookRow) -> None:
        """Delete a hook with its deliveries (the SQL stores leave those of a replaced
        source's hooks behind, where no read can reach them)."""
        t = self._db
        del t.hooks[hook.pk]
        del t.hook_ids[hook.id]
        t.drop_deliveries(hook.pk)

    @staticmethod
    def _hook(row: HookRow) -> WebhookRecord:
        return WebhookRecord(
            row.id,
            row.url,
            row.events,
            row.secret,
            row.wait_threshold_ms,
            row.source,
            row.created_on,
        )

    async def list_webhooks(self, workflow_pk: int) -> list[WebhookRecord]:
        rows = [h for h in self._db.hooks.values() if h.workflow_pk == workflow_pk]
        rows.sort(key=lambda h: (h.created_on, h.id))
        return [self._hook(h) for h in rows]

    async def delete_webhook(self, workflow_pk: int, hook_id: str) -> bool:
        t = self._db
        pk = t.hook_ids.get(hook_id)
        if pk is None or t.hooks[pk].workflow_pk != workflow_pk:
            return False
        self._drop_hook(t.hooks[pk])
        return True

    async def enqueue_overdue_waits(self, now: int) -> int:
        t = self._db
        queued = 0
        for hook in list(t.hooks.values()):
            workflow = t.workflows.get(hook.workflow_pk)
            if WAITING not in hook.events or hook.wait_threshold_ms is None or workflow is None:
                continue
            for row in self._rows_of(hook.workflow_pk):
                if row.status != Status.WAITING:
                    continue
                # The wait's start is the notice's time: one notice per wait.
                last = next((e for e in reversed(row.events) if e.step_kind is not None), None)
                if last is None or last.type != EventType.WAIT_STARTED:
                    continue
                if last.ts <= now - hook.wait_threshold_ms and t.add_delivery(
                    hook, row.pk, workflow.name, row.id, WAITING, None, last.ts, due=now
                ):
                    queued += 1
        return queued

    async def claim_deliveries(
        self, owner: str, now: int, lease_ms: int, limit: int
    ) -> list[DeliveryJob]:
        t = self._db
        due = [
            d
            for d in t.deliveries.values()
            if d.state == PENDING
            and d.next_attempt_at <= now
            and (d.lease_expires is None or d.lease_expires <= now)
        ]
        due.sort(key=lambda d: (d.next_attempt_at, d.pk))
        jobs = []
        for d in page(due, 0, limit):
            hook = t.hooks[d.hook_pk]
            d.lease_owner, d.lease_expires = owner, now + lease_ms
            d.attempts += 1
            jobs.append(
                DeliveryJob(
                    d.pk,
                    hook.id,
                    hook.url,
                    hook.secret,
                    d.workflow_name,
                    d.instance_id,
                    d.event,
                    d.error,
                    d.at,
                    d.attempts,
                )
            )
        return sorted(jobs, key=lambda j: j.pk)

    async def finish_delivery(
        self,
        delivery_pk: int,
        owner: str,
        attempt: AttemptLog,
        *,
        delivered: bool,
        retry_at: int | None,
    ) -> bool:
        d = self._db.deliveries.get(delivery_pk)
        if d is None or d.lease_owner != owner:
            return False
        d.state = DELIVERED if delivered else (PENDING if retry_at is not None else FAILED)
        d.lease_owner = d.lease_expires = None
        ended = attempt.started_on + attempt.duration_ms
        # A finished row keeps when it finished here: what pruning goes by.
        d.next_attempt_at = ended if retry_at is None else retry_at
        d.last_error = attempt.error
        d.delivered_on = ended if delivered else None
        d.log.append((attempt.started_on, attempt.duration_ms, attempt.status_code, attempt.error))
        return True

    async def prune_deliveries(self, before: int, limit: int) -> int:
        t = self._db
        done = [
            d for d in t.deliveries.values() if d.state != PENDING and d.next_attempt_at < before
        ]
        done.sort(key=lambda d: (d.next_attempt_at, d.pk))
        doomed = page(done, 0, limit)
        for d in doomed:
            del t.deliveries[d.pk]
            t.delivery_keys.discard((d.hook_pk, d.instance_pk, d.event, d.at))
        return len(doomed)

    async def release_delivery_leases(self) -> int:
        count = 0
        for d in self._db.deliveries.values():
            if d.lease_owner is not None:
                d.lease_owner = d.lease_expires = None
                count += 1
        return count

    async def list_deliveries(
        self, workflow_pk: int, hook_id: str | None, state: str | None, limit: int
    ) -> list[DeliveryRecord]:
        t = self._db
        found = []
        for d in sorted(t.deliveries.values(), key=lambda d: d.pk, reverse=True):
            hook = t.hooks[d.hook_pk]
            if (
                hook.workflow_pk == workflow_pk
                and (hook_id is None or hook.id == hook_id)
                and (state is None or d.state == state)
            ):
                found.append(self._delivery(d, hook))
        return page(found, 0, limit)

    @staticmethod
    def _delivery(d: DeliveryRow, hook: HookRow) -> DeliveryRecord:
        return DeliveryRecord(
            d.pk,
            hook.id,
            hook.url,
            d.instance_id,
            d.event,
            d.at,
            d.state,
            d.attempts,
            d.next_attempt_at,
            d.last_error,
            d.delivered_on,
            tuple(AttemptLog(*a) for a in d.log),
        )

    async def resend_delivery(self, workflow_pk: int, delivery_pk: int, now: int) -> bool:
        t = self._db
        d = t.deliveries.get(delivery_pk)
        if d is None or t.hooks[d.hook_pk].workflow_pk != workflow_pk:
            return False
        d.state, d.next_attempt_at = PENDING, now
        d.lease_owner = d.lease_expires = None
        return True
