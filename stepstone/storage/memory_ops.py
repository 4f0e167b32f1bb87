"""The in-memory store's extension tables: settings, tokens, signing keys, approval links,
bulk jobs and the audit log (a base of ``MemoryStorage`` in ``storage/memory.py``; webhooks
in ``memory_hooks.py``).

Every method reads or changes ``Tables`` without awaiting in between: atomic on one loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson

from stepstone.model.ops_records import (
    BULK_CANCELLED,
    BULK_ENDED,
    BULK_QUEUED,
    BULK_RUNNING,
    ITEM_DONE,
    ITEM_FAILED,
    ITEM_PENDING,
    ITEM_SKIPPED,
    AuditEntry,
    AuditQuery,
    BulkItem,
    BulkJobRecord,
    BulkProgress,
    InstanceFilter,
)
from stepstone.storage.base import ApprovalLinkRecord, InstanceRecord, TokenRecord
from stepstone.storage.memory_hooks import MemoryHooks
from stepstone.storage.memory_rows import ApprovalRow, InstanceRow, TokenRow, own, page


class DuplicateKey(ValueError):
    """A row with that key exists already; nothing was written (SQL's unique violation)."""


def _error_name(error: bytes | None) -> Any:
    if error is None:
        return None
    try:
        decoded = orjson.loads(error)
    except orjson.JSONDecodeError:
        return None
    return decoded.get("name") if isinstance(decoded, dict) else None


def _selected(row: InstanceRow, where: InstanceFilter) -> bool:
    return (
        (not where.statuses or row.status in where.statuses)
        and (where.created_after is None or row.created_on >= where.created_after)
        and (where.created_before is None or row.created_on < where.created_before)
        and (not where.id_prefix or row.id.startswith(where.id_prefix))
        and (where.error_name is None or _error_name(row.error) == where.error_name)
    )


class MemoryOps(MemoryHooks):
    # --- retention settings, tokens --------------------------------------------------------

    async def get_account_settings(self, account_id: str) -> tuple[int | None, int | None]:
        return self._db.account_settings.get(account_id, (None, None))

    async def put_account_settings(
        self, account_id: str, success_retention_ms: int | None, error_retention_ms: int | None
    ) -> None:
        self._db.account_settings[account_id] = (success_retention_ms, error_retention_ms)

    async def create_token(self, token: TokenRecord, token_hash: str) -> None:
        t = self._db
        if token.id in t.tokens or token_hash in t.token_hashes:
            raise DuplicateKey(f"a token with id {token.id!r} or that hash exists")
        t.tokens[token.id] = TokenRow(
            token.id,
            token.name,
            token_hash,
            tuple(token.permissions),
            None if token.accounts is None else tuple(token.accounts),
            token.created_on,
        )
        t.token_hashes[token_hash] = token.id

    @staticmethod
    def _token(row: TokenRow) -> TokenRecord:
        return TokenRecord(
            row.id, row.name, row.permissions, row.accounts, row.created_on, row.revoked_on
        )

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        t = self._db
        token_id = t.token_hashes.get(token_hash)
        row = None if token_id is None else t.tokens[token_id]
        return None if row is None or row.revoked_on is not None else self._token(row)

    async def list_tokens(self) -> list[TokenRecord]:
        rows = sorted(self._db.tokens.values(), key=lambda r: r.created_on)
        return [self._token(r) for r in rows]

    async def revoke_token(self, token_id: str, now: int) -> bool:
        row = self._db.tokens.get(token_id)
        if row is None or row.revoked_on is not None:
            return False
        row.revoked_on = now
        return True

    # --- signing keys and approval links ---------------------------------------------------

    async def signing_key(self, name: str, candidate: bytes) -> bytes:
        return self._db.signing_keys.setdefault(name, own(candidate))

    async def create_approval_link(self, link: ApprovalLinkRecord) -> None:
        t = self._db
        if link.id in t.approval_links:
            raise DuplicateKey(f"an approval link {link.id!r} exists")
        t.approval_links[link.id] = ApprovalRow(
            link.id, link.instance_pk, link.event_type, link.expires_at, link.created_on, link.title
        )

    async def get_approval_link(self, link_id: str) -> ApprovalLinkRecord | None:
        t = self._db
        row = t.approval_links.get(link_id)
        instance = None if row is None else t.instances.get(row.instance_pk)
        workflow = None if instance is None else t.workflows.get(instance.workflow_pk)
        if row is None or instance is None or workflow is None:
            return None
        return ApprovalLinkRecord(
            id=row.id,
            instance_pk=row.instance_pk,
            event_type=row.event_type,
            expires_at=row.expires_at,
            created_on=row.created_on,
            title=row.title,
            used_on=row.used_on,
            workflow=workflow.name,
            instance_id=instance.id,
            account_id=workflow.account_id,
        )

    async def use_approval_link(self, link_id: str, now: int) -> bool:
        row = self._db.approval_links.get(link_id)
        if row is None or row.used_on is not None:
            return False
        row.used_on = now
        return True

    # --- bulk jobs -------------------------------------------------------------------------

    async def select_instances(
        self, workflow_pk: int, where: InstanceFilter, after: tuple[int, str] | None, limit: int
    ) -> list[InstanceRecord]:
        found = [
            row
            for row in self._rows_of(workflow_pk)
            if _selected(row, where) and (after is None or (row.created_on, row.id) > after)
        ]
        found.sort(key=lambda r: (r.created_on, r.id))
        return [r.record() for r in page(found, 0, limit)]

    async def count_selected(self, workflow_pk: int, where: InstanceFilter) -> int:
        return sum(1 for row in self._rows_of(workflow_pk) if _selected(row, where))

    async def create_bulk_job(self, job: BulkJobRecord) -> None:
        if job.id in self._db.bulk_jobs:
            raise DuplicateKey(f"a bulk job {job.id!r} exists")
        self._db.bulk_jobs[job.id] = dataclasses.replace(
            job, spec=own(job.spec), actor=own(job.actor)
        )
        self._db.bulk_items[job.id] = {}

    async def get_bulk_job(self, account_id: str, job_id: str) -> BulkJobRecord | None:
        job = self._db.bulk_jobs.get(job_id)
        return job if job is not None and job.account_id == account_id else None

    async def list_bulk_jobs(
        self, account_id: str, workflow_name: str | None, limit: int
    ) -> list[BulkJobRecord]:
        jobs = [
            j
            for j in self._db.bulk_jobs.values()
            if j.account_id == account_id
            and (workflow_name is None or j.workflow_name == workflow_name)
        ]
        jobs.sort(key=lambda j: (j.created_on, j.id), reverse=True)
        return page(jobs, 0, limit)

    async def claim_bulk_job(self, owner: str, now: int, lease_ms: int) -> BulkJobRecord | None:
        claimable = [
            j
            for j in self._db.bulk_jobs.values()
            if j.status == BULK_QUEUED
            or (j.status == BULK_RUNNING and (j.lease_expires is None or j.lease_expires <= now))
        ]
        if not claimable:
            return None
        oldest = min(claimable, key=lambda j: j.created_on)
        claimed = dataclasses.replace(
            oldest,
            status=BULK_RUNNING,
            lease_owner=owner,
            lease_expires=now + lease_ms,
            modified_on=now,
        )
        self._db.bulk_jobs[claimed.id] = claimed
        return claimed

    async def advance_bulk_job(
        self, job_id: str, owner: str, progress: BulkProgress, now: int, lease_ms: int
    ) -> bool:
        job = self._db.bulk_jobs.get(job_id)
        if job is None or job.lease_owner != owner or job.status != BULK_RUNNING:
            return False
        items = self._db.bulk_items.setdefault(job_id, {})
        counts = {ITEM_DONE: 0, ITEM_SKIPPED: 0, ITEM_FAILED: 0}
        for item in progress.items:
            known = items.get(item.instance_id)
            if known is not None and known[0] != ITEM_PENDING:
                continue  # an instance already recorded keeps its first outcome
            items[item.instance_id] = (item.outcome, item.reason)
            if item.outcome in counts:
                counts[item.outcome] += 1
        ended = progress.finished is not None
        self._db.bulk_jobs[job_id] = dataclasses.replace(
            job,
            done=job.done + counts[ITEM_DONE],
            skipped=job.skipped + counts[ITEM_SKIPPED],
            failed=job.failed + counts[ITEM_FAILED],
            cursor=progress.cursor,
            lease_expires=None if ended else now + lease_ms,
            modified_on=now,
            status=job.status if progress.finished is None else progress.finished,
            error=job.error if progress.error is None else progress.error,
            finished_on=now if ended else None,
            lease_owner=None if ended else job.lease_owner,
        )
        return True

    async def recorded_bulk_items(self, job_id: str, instance_ids: Sequence[str]) -> dict[str, str]:
        items = self._db.bulk_items.get(job_id, {})
        return {i: items[i][0] for i in instance_ids if i in items}

    async def list_bulk_items(
        self, job_id: str, outcome: str | None, after: str | None, limit: int
    ) -> list[BulkItem]:
        found = [
            BulkItem(instance_id, item_outcome, reason)
            for instance_id, (item_outcome, reason) in self._db.bulk_items.get(job_id, {}).items()
            if (outcome is None or item_outcome == outcome)
            and (after is None or instance_id > after)
        ]
        found.sort(key=lambda i: i.instance_id)
        return page(found, 0, limit)

    async def cancel_bulk_job(self, account_id: str, job_id: str, now: int) -> bool:
        job = self._db.bulk_jobs.get(job_id)
        if job is None or job.account_id != account_id or job.status in BULK_ENDED:
            return False
        self._db.bulk_jobs[job_id] = dataclasses.replace(
            job,
            status=BULK_CANCELLED,
            lease_owner=None,
            lease_expires=None,
            modified_on=now,
            finished_on=now,
        )
        return True

    # --- the audit log ---------------------------------------------------------------------

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        t = self._db
        for e in entries:
            detail = None if e.detail is None else own(e.detail)
            self._db.audit.append(dataclasses.replace(e, detail=detail, seq=t.next_id("audit_log")))

    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]:
        q = query
        found: list[AuditEntry] = []
        for e in reversed(self._db.audit):  # newest first: seqs only grow
            if len(found) == q.limit:
                break
            if (
                e.account_id == q.account_id
                and (q.workflow_name is None or e.workflow_name == q.workflow_name)
                and (q.instance_id is None or e.instance_id == q.instance_id)
                and (q.bulk_job_id is None or e.bulk_job_id == q.bulk_job_id)
                and (q.actor is None or q.actor in (e.actor_name, e.actor_id, e.actor_kind))
                and (not q.actions or e.action in q.actions)
                and (q.since is None or e.at >= q.since)
                and (q.until is None or e.at < q.until)
                and (q.before is None or e.seq < q.before)
            ):
                found.append(e)
        return found

    async def delete_audit_before(self, at: int, limit: int) -> int:
        doomed = {e.seq for e in page([e for e in self._db.audit if e.at < at], 0, limit)}
        self._db.audit[:] = [e for e in self._db.audit if e.seq not in doomed]
        return len(doomed)
