-- Approval links (a Stepstone extension): signed, expiring, single-use URLs that send an event.
-- A link is used at most once: used_on is set by the one submission that gets through.
CREATE TABLE approval_links (
    id TEXT PRIMARY KEY,
    instance_pk BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_on BIGINT NOT NULL,
    title TEXT,
    used_on BIGINT
);
CREATE INDEX approval_links_by_instance ON approval_links (instance_pk);
-- The links' signing key, made once per database, so every server on it checks alike.
CREATE TABLE signing_keys (
    name TEXT PRIMARY KEY,
    secret BYTEA NOT NULL
);
