-- Lifecycle webhooks (a Stepstone extension). The transaction that changes an instance's
-- status writes the outbox row (a TEMP trigger the store installs at open, as these
-- migrations hold no triggers), so a transition is never lost between commit and send.
CREATE TABLE webhooks (
    pk INTEGER PRIMARY KEY,
    workflow_pk INTEGER NOT NULL,
    id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    wait_threshold_ms INTEGER,
    source TEXT NOT NULL,
    created_on INTEGER NOT NULL
);
CREATE INDEX webhooks_by_workflow ON webhooks (workflow_pk);

CREATE TABLE webhook_deliveries (
    pk INTEGER PRIMARY KEY,
    hook_pk INTEGER NOT NULL,
    instance_pk INTEGER NOT NULL,
    -- Kept by value: an operator may delete the instance before its news is out.
    workflow_name TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    event TEXT NOT NULL,
    error BLOB,
    at INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires INTEGER,
    last_error TEXT,
    delivered_on INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (hook_pk, pk);
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (hook_pk, instance_pk, event, at);

CREATE TABLE webhook_attempts (
    pk INTEGER PRIMARY KEY,
    delivery_pk INTEGER NOT NULL,
    started_on INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER,
    error TEXT
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_pk, pk);
