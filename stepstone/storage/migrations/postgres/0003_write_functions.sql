-- The worker's hot writes as server-side functions: each is one statement, so it costs one
-- round trip and can run in its own implicit transaction (no BEGIN or COMMIT of its own).
-- Each applies at most once however often it is sent: a client whose connection died before
-- the answer arrived cannot know whether it committed, so it sends the same call again and the
-- function recognises a write that already happened. Functions are not part of schema.json.

-- Append a claim's history events, fenced by epoch; the instance's status, or NULL if fenced.
-- A retry (p_retry) whose events are all in the log already committed the first time. The
-- engine never writes two events alike in type, step, timestamp and data for one instance
-- (step names are unique per instance and attempts are numbered), so finding them is proof.
CREATE FUNCTION stepstone_record_progress(
    p_pk BIGINT, p_epoch BIGINT, p_retry BOOLEAN,
    p_ts BIGINT[], p_type TEXT[], p_kind TEXT[], p_name TEXT[], p_data BYTEA[]
) RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    held BIGINT;
    current_status TEXT;
BEGIN
    -- Each statement of a volatile function sees what committed before it, so after waiting
    -- here for a dying connection's transaction the check below sees that transaction's rows.
    SELECT epoch, status INTO held, current_status FROM instances WHERE pk = p_pk FOR UPDATE;
    IF p_retry AND FOUND AND cardinality(p_ts) > 0 AND NOT EXISTS (
        SELECT 1 FROM unnest(p_ts, p_type, p_kind, p_name, p_data) AS e(ts, type, kind, name, data)
        WHERE NOT EXISTS (
            SELECT 1 FROM instance_events x WHERE x.instance_pk = p_pk AND x.ts = e.ts
            AND x.type = e.type AND x.step_kind IS NOT DISTINCT FROM e.kind
            AND x.step_name IS NOT DISTINCT FROM e.name AND x.data IS NOT DISTINCT FROM e.data
        )
    ) THEN
        RETURN current_status;
    END IF;
    IF held IS DISTINCT FROM p_epoch THEN
        RETURN NULL;
    END IF;
    INSERT INTO instance_events (instance_pk, ts, type, step_kind, step_name, data)
    SELECT p_pk, e.ts, e.type, e.kind, e.name, e.data
    FROM unnest(p_ts, p_type, p_kind, p_name, p_data) WITH ORDINALITY
        AS e(ts, type, kind, name, data, n)
    ORDER BY e.n;
    RETURN current_status;
END $$;

-- End an activation, fenced: the status stored, or NULL if fenced. A release is the only write
-- that clears the lease without bumping the epoch, so a row of the claim's epoch without a
-- lease owner was released by this very call on an earlier try, and is left as it is.
-- p_events are the claim's queued history events followed by the release's own.
CREATE FUNCTION stepstone_release(
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
        -- Retention: the instance's, then its version's, then its account's, then the default.
        SELECT p_now + COALESCE(
            CASE WHEN new_status = 'complete' THEN inst.success_retention_ms
                ELSE inst.error_retention_ms END,
            CASE WHEN new_status = 'complete' THEN v.success_retention_ms
                ELSE v.error_retention_ms END,
            CASE WHEN new_status = 'complete' THEN s.success_retention_ms
                ELSE s.error_retention_ms END,
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
