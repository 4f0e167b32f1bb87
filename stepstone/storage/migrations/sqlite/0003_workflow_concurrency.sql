-- Per-workflow concurrency limit (Cloudflare's concurrency.limit). The version keeps what was
-- deployed; the workflow row holds the current one, so a claim reads it without a join.
ALTER TABLE versions ADD COLUMN concurrency_limit INTEGER;
ALTER TABLE workflows ADD COLUMN concurrency_limit INTEGER;
-- Live leases per workflow: a capped claim counts only its workflow's; the global count
-- (max_running) still reads only leased rows.
DROP INDEX instances_leased;
CREATE INDEX instances_leased_by_workflow ON instances (workflow_pk, lease_expires)
    WHERE lease_owner IS NOT NULL;
-- A capped workflow's next candidates, oldest first, without walking other workflows' rows.
-- Leased rows are left out (claims move rows out, releases back in); expired leases are found
-- through instances_leased_by_workflow.
CREATE INDEX instances_unleased_by_workflow ON instances (workflow_pk, priority, runnable_at)
    WHERE runnable_at IS NOT NULL AND lease_owner IS NULL;
