-- Failover safety (issue 19).
--
-- Commit marks: every write transaction inserts a random token here in the message that
-- commits it; when COMMIT's answer is lost the client inserts the same token as a veto on
-- whichever server is the primary now (stepstone/storage/postgres_db.py). Its own mark there
-- proves the transaction committed; otherwise the veto keeps it from ever committing. Kept
-- out of the public schema: this is a PostgreSQL mechanism, not part of the data model both
-- dialects declare. Old marks are deleted by the retention sweeper (BRIN on insertion time).
CREATE SCHEMA IF NOT EXISTS stepstone_internal;
CREATE TABLE stepstone_internal.commit_marks (
    token UUID PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    veto BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX commit_marks_at ON stepstone_internal.commit_marks USING brin (at);

-- The fenced writes of 0003-0008, fenced by the lease owner as well as the epoch: a claim
-- lost with a failed primary (or whose commit was settled wrongly) can be made again at the
-- same epoch by another worker, and an epoch alone would let both holders write. The earlier
-- signatures stay for workers of an earlier version still running during an upgrade; this
-- version calls only these (one more argument each, so overloads never clash).

CREATE FUNCTION stepstone_record_progress(
    p_pk BIGINT, p_epoch BIGINT, p_owner TEXT, p_retry BOOLEAN,
    p_ts BIGINT[], p_type TEXT[], p_kind TEXT[], p_name TEXT[], p_data BYTEA[]
) RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    held BIGINT;
    holder TEXT;
    current_status TEXT;
BEGIN
    SELECT epoch, lease_owner, status INTO held, holder, current_status
    FROM instances WHERE pk = p_pk FOR UPDATE;
    -- A retry whose events are all in the log already committed the first time (0003).
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
    IF held IS DISTINCT FROM p_epoch OR holder IS DISTINCT FROM p_owner THEN
        RETURN NULL;
    END IF;
    INSERT INTO instance_events (instance_pk, ts, type, step_kind, step_name, data)
    SELECT p_pk, e.ts, e.type, e.kind, e.name, e.data
    FROM unnest(p_ts, p_type, p_kind, p_name, p_data) WITH ORDINALITY
        AS e(ts, type, kind, name, data, n)
    ORDER BY e.n;
    RETURN current_status;
END $$;

CREATE FUNCTION stepstone_record_progress_many(
    p_pks BIGINT[], p_epochs BIGINT[], p_owners TEXT[], p_retry BOOLEAN, p_of INTEGER[],
    p_ts BIGINT[], p_type TEXT[], p_kind TEXT[], p_name TEXT[], p_data BYTEA[]
) RETURNS TABLE (r_pk BIGINT, r_status TEXT) LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER;
    held BIGINT;
    holder TEXT;
    current_status TEXT;
BEGIN
    PERFORM 1 FROM instances i WHERE i.pk = ANY(p_pks) ORDER BY i.pk FOR UPDATE;
    IF NOT p_retry THEN
        RETURN QUERY
        WITH c AS (
            SELECT * FROM unnest(p_pks, p_epochs, p_owners) WITH ORDINALITY
                AS c(pk, epoch, owner, n)
        ),
        held_now AS (
            SELECT c.n, c.pk, i.status FROM c JOIN instances i
                ON i.pk = c.pk AND i.epoch = c.epoch AND i.lease_owner = c.owner
        ),
        written AS (
            INSERT INTO instance_events (instance_pk, ts, type, step_kind, step_name, data)
            SELECT h.pk, e.ts, e.type, e.kind, e.name, e.data
            FROM unnest(p_of, p_ts, p_type, p_kind, p_name, p_data) WITH ORDINALITY
                AS e(g, ts, type, kind, name, data, k)
            JOIN held_now h ON h.n = e.g
            ORDER BY e.k
        )
        SELECT c.pk, h.status FROM c LEFT JOIN held_now h ON h.n = c.n ORDER BY c.n;
        RETURN;
    END IF;
    FOR n IN 1 .. cardinality(p_pks) LOOP
        SELECT i.epoch, i.lease_owner, i.status INTO held, holder, current_status
        FROM instances i WHERE i.pk = p_pks[n];
        r_pk := p_pks[n];
        r_status := current_status;
        IF FOUND AND n = ANY(p_of) AND NOT EXISTS (
            SELECT 1 FROM unnest(p_of, p_ts, p_type, p_kind, p_name, p_data)
                AS e(g, ts, type, kind, name, data)
            WHERE e.g = n AND NOT EXISTS (
                SELECT 1 FROM instance_events x WHERE x.instance_pk = p_pks[n]
                AND x.ts = e.ts AND x.type = e.type AND x.step_kind IS NOT DISTINCT FROM e.kind
                AND x.step_name IS NOT DISTINCT FROM e.name AND x.data IS NOT DISTINCT FROM e.data
            )
        ) THEN
            NULL;  -- committed by the lost try
        ELSIF held IS DISTINCT FROM p_epochs[n] OR holder IS DISTINCT FROM p_owners[n] THEN
            r_status := NULL;
        ELSE
            INSERT INTO instance_events (instance_pk, ts, type, step_kind, step_name, data)
            SELECT p_pks[n], e.ts, e.type, e.kind, e.name, e.data
            FROM unnest(p_of, p_ts, p_type, p_kind, p_name, p_data) WITH ORDINALITY
                AS e(g, ts, type, kind, name, data, k)
            WHERE e.g = n ORDER BY e.k;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;

-- 0008's release, fenced by the owner too. A row of the claim's epoch without a lease owner
-- was released by this very call on an earlier try (a release clears the lease without
-- bumping the epoch) and is left as it is; one held by another owner is fenced.
CREATE FUNCTION stepstone_release(
    p_pk BIGINT, p_epoch BIGINT, p_owner TEXT, p_wake_seq BIGINT, p_status TEXT,
    p_runnable_at BIGINT, p_output BYTEA, p_error BYTEA, p_rollback BYTEA, p_now BIGINT,
    p_notify_before BIGINT, p_default_retention BIGINT,
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
    IF inst.lease_owner <> p_owner THEN
        RETURN NULL;
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

CREATE FUNCTION stepstone_release_many(
    p_pks BIGINT[], p_epochs BIGINT[], p_owners TEXT[], p_wake_seqs BIGINT[],
    p_statuses TEXT[], p_runnable_ats BIGINT[], p_outputs BYTEA[], p_errors BYTEA[],
    p_rollbacks BYTEA[], p_nows BIGINT[], p_near_wake_ms BIGINT, p_default_retention BIGINT,
    p_of INTEGER[], p_ts BIGINT[], p_type TEXT[], p_kind TEXT[], p_name TEXT[], p_data BYTEA[]
) RETURNS TABLE (r_pk BIGINT, r_status TEXT) LANGUAGE plpgsql AS $$
DECLARE
    r RECORD;
BEGIN
    PERFORM 1 FROM instances i WHERE i.pk = ANY(p_pks) ORDER BY i.pk FOR UPDATE;
    FOR r IN
        SELECT c.*, ev.ts, ev.type, ev.kind, ev.name, ev.data
        FROM unnest(p_pks, p_epochs, p_owners, p_wake_seqs, p_statuses, p_runnable_ats,
            p_outputs, p_errors, p_rollbacks, p_nows) WITH ORDINALITY
            AS c(pk, epoch, owner, wake_seq, status, runnable_at, output, error, rollback, now, n)
        LEFT JOIN (
            SELECT e.g, array_agg(e.ts ORDER BY e.k) AS ts, array_agg(e.type ORDER BY e.k) AS type,
                array_agg(e.kind ORDER BY e.k) AS kind, array_agg(e.name ORDER BY e.k) AS name,
                array_agg(e.data ORDER BY e.k) AS data
            FROM unnest(p_of, p_ts, p_type, p_kind, p_name, p_data) WITH ORDINALITY
                AS e(g, ts, type, kind, name, data, k)
            GROUP BY e.g
        ) ev ON ev.g = c.n
        ORDER BY c.n
    LOOP
        r_pk := r.pk;
        r_status := stepstone_release(
            r.pk, r.epoch, r.owner, r.wake_seq, r.status, r.runnable_at, r.output, r.error,
            r.rollback, r.now, r.now + p_near_wake_ms, p_default_retention,
            COALESCE(r.ts, '{}'), COALESCE(r.type, '{}'), COALESCE(r.kind, '{}'),
            COALESCE(r.name, '{}'), COALESCE(r.data, '{}'));
        RETURN NEXT;
    END LOOP;
END $$;
