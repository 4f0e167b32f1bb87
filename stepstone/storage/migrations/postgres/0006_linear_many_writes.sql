-- The many-instance writes of 0004 and 0005, linear in the number of events. Those looked up
-- each instance's events with a scan of all the statement's events (unnest per instance), so a
-- statement of n instances did n scans: with a hundred instances per statement that was most
-- of the server's time. Same signatures, same rules; only how the events are found changes.

CREATE OR REPLACE FUNCTION stepstone_record_progress_many(
    p_pks BIGINT[], p_epochs BIGINT[], p_retry BOOLEAN, p_of INTEGER[],
    p_ts BIGINT[], p_type TEXT[], p_kind TEXT[], p_name TEXT[], p_data BYTEA[]
) RETURNS TABLE (r_pk BIGINT, r_status TEXT) LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER;
    held BIGINT;
    current_status TEXT;
BEGIN
    PERFORM 1 FROM instances i WHERE i.pk = ANY(p_pks) ORDER BY i.pk FOR UPDATE;
    IF NOT p_retry THEN
        -- One statement: the instances whose epoch holds, then all their events in order.
        -- (It sees what committed before it, including a dying connection's transaction
        -- waited for above.)
        RETURN QUERY
        WITH c AS (
            SELECT * FROM unnest(p_pks, p_epochs) WITH ORDINALITY AS c(pk, epoch, n)
        ),
        held_now AS (
            SELECT c.n, c.pk, i.status FROM c JOIN instances i ON i.pk = c.pk AND i.epoch = c.epoch
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
    -- A retry after a lost answer (rare): instance by instance, as 0004 did.
    FOR n IN 1 .. cardinality(p_pks) LOOP
        SELECT i.epoch, i.status INTO held, current_status FROM instances i WHERE i.pk = p_pks[n];
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
        ELSIF held IS DISTINCT FROM p_epochs[n] THEN
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

CREATE OR REPLACE FUNCTION stepstone_release_many(
    p_pks BIGINT[], p_epochs BIGINT[], p_wake_seqs BIGINT[], p_statuses TEXT[],
    p_runnable_ats BIGINT[], p_outputs BYTEA[], p_errors BYTEA[], p_rollbacks BYTEA[],
    p_nows BIGINT[], p_near_wake_ms BIGINT, p_default_retention BIGINT,
    p_of INTEGER[], p_ts BIGINT[], p_type TEXT[], p_kind TEXT[], p_name TEXT[], p_data BYTEA[]
) RETURNS TABLE (r_pk BIGINT, r_status TEXT) LANGUAGE plpgsql AS $$
DECLARE
    r RECORD;
BEGIN
    PERFORM 1 FROM instances i WHERE i.pk = ANY(p_pks) ORDER BY i.pk FOR UPDATE;
    -- Each release's events gathered once, in order, then each release applied by 0003's rules.
    FOR r IN
        SELECT c.*, ev.ts, ev.type, ev.kind, ev.name, ev.data
        FROM unnest(p_pks, p_epochs, p_wake_seqs, p_statuses, p_runnable_ats, p_outputs,
            p_errors, p_rollbacks, p_nows) WITH ORDINALITY
            AS c(pk, epoch, wake_seq, status, runnable_at, output, error, rollback, now, n)
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
            r.pk, r.epoch, r.wake_seq, r.status, r.runnable_at, r.output, r.error, r.rollback,
            r.now, r.now + p_near_wake_ms, p_default_retention,
            COALESCE(r.ts, '{}'), COALESCE(r.type, '{}'), COALESCE(r.kind, '{}'),
            COALESCE(r.name, '{}'), COALESCE(r.data, '{}'));
        RETURN NEXT;
    END LOOP;
END $$;
