-- Operator extensions (not Cloudflare's): bulk jobs over a filter and the audit log.
-- A bulk job is a claimable row with a lease (any server with a worker runs it, one at a time)
-- and a keyset cursor (created_on, id) so a restart resumes after the last finished page.
CREATE TABLE bulk_jobs (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    workflow_name TEXT NOT NULL,
    action TEXT NOT NULL,
    spec BLOB NOT NULL,
    actor BLOB NOT NULL,
    status TEXT NOT NULL,
    matched INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    cursor_created_on INTEGER,
    cursor_id TEXT,
    lease_owner TEXT,
    lease_expires INTEGER,
    error TEXT,
    created_on INTEGER NOT NULL,
    modified_on INTEGER NOT NULL,
    finished_on INTEGER
);
CREATE INDEX bulk_jobs_by_workflow ON bulk_jobs (account_id, workflow_name, created_on);
CREATE INDEX bulk_jobs_claimable ON bulk_jobs (status, lease_expires);

-- One row per instance a job has acted on: makes a redone page idempotent and keeps the
-- reason each skip or failure happened.
CREATE TABLE bulk_job_items (
    job_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    PRIMARY KEY (job_id, instance_id)
);
CREATE INDEX bulk_job_items_by_outcome ON bulk_job_items (job_id, outcome, instance_id);

-- Append-only record of every operator action; seq is the paging cursor.
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    workflow_name TEXT,
    instance_id TEXT,
    action TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_name TEXT,
    actor_id TEXT,
    outcome TEXT NOT NULL,
    detail BLOB,
    bulk_job_id TEXT
);
CREATE INDEX audit_log_by_instance ON audit_log (account_id, workflow_name, instance_id, seq);
CREATE INDEX audit_log_by_at ON audit_log (at);
