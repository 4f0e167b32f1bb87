-- Lifecycle webhooks (a Stepstone extension). The transaction that changes an instance's
-- status writes the outbox row, so a transition is never lost between commit and send.
-- events is ',errored,complete,' so one LIKE matches in both dialects.
CREATE TABLE webhooks (
    pk BIGSERIAL PRIMARY KEY,
    workflow_pk BIGINT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    wait_threshold_ms BIGINT,
    source TEXT NOT NULL,
    created_on BIGINT NOT NULL
);
CREATE INDEX webhooks_by_workflow ON webhooks (workflow_pk);

CREATE TABLE webhook_deliveries (
    pk BIGSERIAL PRIMARY KEY,
    hook_pk BIGINT NOT NULL,
    instance_pk BIGINT NOT NULL,
    -- Kept by value: an operator may delete the instance before its news is out.
    workflow_name TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    event TEXT NOT NULL,
    error BYTEA,
    at BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires BIGINT,
    last_error TEXT,
    delivered_on BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (hook_pk, pk);
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (hook_pk, instance_pk, event, at);

CREATE TABLE webhook_attempts (
    pk BIGSERIAL PRIMARY KEY,
    delivery_pk BIGINT NOT NULL,
    started_on BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code INTEGER,
    error TEXT
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_pk, pk);

CREATE FUNCTION stepstone_webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (hook_pk, instance_pk, workflow_name, instance_id, event,
        error, at, state, next_attempt_at)
    SELECT h.pk, NEW.pk, w.name, NEW.id, e.name, NEW.error, NEW.modified_on, 'pending',
        NEW.modified_on
    FROM webhooks h JOIN workflows w ON w.pk = h.workflow_pk, (SELECT NEW.status AS name UNION ALL SELECT 'rolledBack'
        WHERE OLD.status = 'rollingBack'
            AND NEW.status IN ('errored', 'terminated', 'complete')) e
    WHERE h.workflow_pk = NEW.workflow_pk AND h.events LIKE '%,' || e.name || ',%'
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER instances_webhook_outbox AFTER UPDATE OF status ON instances FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status
        AND NEW.status IN ('errored', 'complete', 'terminated', 'paused'))
    EXECUTE FUNCTION stepstone_webhook_outbox();
