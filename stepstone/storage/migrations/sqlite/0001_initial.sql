-- Times are epoch milliseconds (UTC); JSON columns hold orjson-encoded bytes.
CREATE TABLE workflows (
    pk INTEGER PRIMARY KEY,
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    version_id TEXT NOT NULL,
    created_on INTEGER NOT NULL,
    modified_on INTEGER NOT NULL,
    triggered_on INTEGER,
    UNIQUE (account_id, name)
);

CREATE TABLE versions (
    id TEXT PRIMARY KEY,
    workflow_pk INTEGER NOT NULL,
    class_name TEXT NOT NULL,
    script_name TEXT NOT NULL,
    created_on INTEGER NOT NULL,
    limits_steps INTEGER,
    success_retention_ms INTEGER,
    error_retention_ms INTEGER,
    schedules BLOB NOT NULL,
    language TEXT NOT NULL
);
CREATE INDEX versions_by_workflow ON versions (workflow_pk, created_on);

CREATE TABLE instances (
    pk INTEGER PRIMARY KEY,
    workflow_pk INTEGER NOT NULL,
    id TEXT NOT NULL,
    version_id TEXT NOT NULL,
    status TEXT NOT NULL,
    trigger_source TEXT NOT NULL,
    params BLOB NOT NULL,
    schedule BLOB,
    created_on INTEGER NOT NULL,
    modified_on INTEGER NOT NULL,
    started_on INTEGER,
    ended_on INTEGER,
    output BLOB,
    error BLOB,
    rollback BLOB,
    -- Scheduling: a row with runnable_at <= now and no live lease is claimable.
    runnable_at INTEGER,
    priority INTEGER NOT NULL DEFAULT 1,
    lease_owner TEXT,
    lease_expires INTEGER,
    epoch INTEGER NOT NULL DEFAULT 0,
    wake_seq INTEGER NOT NULL DEFAULT 0,
    control TEXT,
    paused_at INTEGER,
    success_retention_ms INTEGER,
    error_retention_ms INTEGER,
    expires_at INTEGER,
    UNIQUE (workflow_pk, id)
);
CREATE INDEX instances_runnable ON instances (priority, runnable_at) WHERE runnable_at IS NOT NULL;
CREATE INDEX instances_wake ON instances (runnable_at) WHERE runnable_at IS NOT NULL;
CREATE INDEX instances_by_created ON instances (workflow_pk, created_on, id);
CREATE INDEX instances_by_status ON instances (workflow_pk, status, created_on, id);
CREATE INDEX instances_expiring ON instances (expires_at) WHERE expires_at IS NOT NULL;

-- The append-only history of each instance; event_id is the subscribe cursor.
CREATE TABLE instance_events (
    event_id INTEGER PRIMARY KEY,
    instance_pk INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    type TEXT NOT NULL,
    step_kind TEXT,
    step_name TEXT,
    data BLOB
);
CREATE INDEX instance_events_by_instance ON instance_events (instance_pk, event_id);

-- Events sent to an instance and not yet consumed by a wait_for_event, FIFO per type.
CREATE TABLE pending_events (
    seq INTEGER PRIMARY KEY,
    instance_pk INTEGER NOT NULL,
    type TEXT NOT NULL,
    payload BLOB NOT NULL,
    ts INTEGER NOT NULL
);
CREATE INDEX pending_events_by_type ON pending_events (instance_pk, type, seq);

-- Byte-stream step outputs, in chunks.
CREATE TABLE stream_chunks (
    instance_pk INTEGER NOT NULL,
    step_name TEXT NOT NULL,
    chunk_no INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (instance_pk, step_name, chunk_no)
) WITHOUT ROWID;

CREATE TABLE account_settings (
    account_id TEXT PRIMARY KEY,
    success_retention_ms INTEGER,
    error_retention_ms INTEGER
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    permissions BLOB NOT NULL,
    accounts BLOB,
    created_on INTEGER NOT NULL,
    revoked_on INTEGER
);
