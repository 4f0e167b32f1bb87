-- Cloudflare's 2026 retention default and jurisdiction.
-- retention_fallback_ms: what an ended instance of this workflow keeps when neither it, its
-- version nor its account sets a retention. NULL means DEFAULT_RETENTION_MS (7 days, the paid
-- default for Workflows created since 2026-09-10). Workflows that exist when this migration
-- runs were created under the 30-day default and keep it.
ALTER TABLE workflows ADD COLUMN retention_fallback_ms BIGINT;
UPDATE workflows SET retention_fallback_ms = 2592000000;
-- eu, fedramp or us; set once, never changed (10209).
ALTER TABLE workflows ADD COLUMN jurisdiction TEXT;

-- 0003's release, its retention chain ending with the workflow's fallback before the default.
CREATE OR REPLACE FUNCTION stepstone_release(
    p_pk BIGINT, p_epoch BIGINT, p_wake_seq BIGINT, p_status TEXT, p_runnable_at BIGINT,
    p_output BYTEA, p_error BYTEA, p_rollback BYTEA, p_now BIGINT, p_notify_before BIGINT,
    p_default_retention BIGINT,
    p_ts BIGINT[], p_type TEXT[], p_kind TEXT[], p_name TEXT[], p_data BYTEA[]
) RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    inst instances%ROWTYPE;
    new_status TEXT := p_status;
    new_runnable_at BIGINT := p_runnable_at;
    new_paused_at BIGINT;
    ended BOOLEAN;
    expires BIGINT;
BEGIN
    SELECT * INTO inst FROM instances WHERE pk = p_pk FOR UPDATE;
    IF NOT FOUND OR inst.epoch <> p_epoch THEN
        RETURN NULL;
    END IF;
    IF inst.lease_owner IS NULL THEN
        RETURN inst.status;
    END IF;
    IF new_status = 'waiting' AND inst.status = 'waitingForPause' THEN
        new_status := 'paused';
        new_runnable_at := NULL;
        new_paused_at := p_now;
    ELSIF new_status = 'paused' THEN
        new_runnable_at := NULL;
        new_paused_at := p_now;
    END IF;
    -- An event delivered since the claim makes a waiting instance runnable now.
    IF new_status = 'waiting' AND inst.wake_seq <> p_wake_seq THEN
        new_runnable_at := p_now;
    END IF;
    ended := new_status IN ('complete', 'errored', 'terminated');
    IF ended THEN
        -- Retention: the instance's, then its version's, then its account's, then the
        -- workflow's fallback, then the default.
        SELECT p_now + COALESCE(
            CASE WHEN new_status = 'complete' THEN inst.success_retention_ms
                ELSE inst.error_retention_ms END,
            CASE WHEN new_status = 'complete' THEN v.success_retention_ms
                ELSE v.error_retention_ms END,
            CASE WHEN new_status = 'complete' THEN s.success_retention_ms
                ELSE s.error_retention_ms END,
            w.retention_fallback_ms,
            p_default_retention)
        INTO expires
        FROM versions v JOIN workflows w ON w.pk = inst.workflow_pk
        LEFT JOIN account_settings s ON s.account_id = w.account_id
        WHERE v.id = inst.version_id;
    END IF;
    UPDATE instances SET status = new_status, runnable_at = new_runnable_at, priority = 0,
        lease_owner = NULL, lease_expires = NULL, modified_on = p_now,
        paused_at = COALESCE(new_paused_at, paused_at), control = NULL,
        output = COALESCE(p_output, output), error = COALESCE(p_error, error),
        rollback = COALESCE(p_rollback, rollback),
        ended_on = CASE WHEN ended THEN p_now ELSE ended_on END, expires_at = expires
    WHERE pk = p_pk;
    INSERT INTO instance_events (instance_pk, ts, type, step_kind, step_name, data)
    SELECT p_pk, e.ts, e.type, e.kind, e.name, e.data
    FROM unnest(p_ts, p_type, p_kind, p_name, p_data) WITH ORDINALITY
        AS e(ts, type, kind, name, data, n)
    ORDER BY e.n;
    IF new_status = 'paused' AND p_status <> 'paused' THEN
        INSERT INTO instance_events (instance_pk, ts, type) VALUES (p_pk, p_now, 'workflow_paused');
    END IF;
    -- Other workers hear of it only when it is due soon; a later wake-up is found by polling.
    IF new_runnable_at IS NOT NULL AND new_runnable_at <= p_notify_before THEN
        PERFORM pg_notify('stepstone_wake', '');
    END IF;
    RETURN new_status;
END $$;
