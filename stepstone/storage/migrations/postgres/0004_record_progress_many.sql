-- Group commit: record the progress of many instances in one statement, so that concurrent
-- activations share round trips and WAL flushes (a lone write still uses the lighter
-- stepstone_record_progress of 0003). Rows are locked in pk order, as claims and batched
-- attempt starts lock them, so concurrent callers cannot deadlock. Per instance, the rules of
-- 0003: its status, or NULL if fenced; on a retry, an instance whose events are all in the log
-- already had them committed.

-- p_of[k] is the position in p_pks (1-based) of the instance event k belongs to.
CREATE FUNCTION stepstone_record_progress_many(
    p_pks BIGINT[], p_epochs BIGINT[], p_retry BOOLEAN, p_of INTEGER[],
    p_ts BIGINT[], p_type TEXT[], p_kind TEXT[], p_name TEXT[], p_data BYTEA[]
) RETURNS TABLE (r_pk BIGINT, r_status TEXT) LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER;
    held BIGINT;
    current_status TEXT;
BEGIN
    PERFORM 1 FROM instances i WHERE i.pk = ANY(p_pks) ORDER BY i.pk FOR UPDATE;
    FOR n IN 1 .. cardinality(p_pks) LOOP
        -- Each statement of a volatile function sees what committed before it, so after
        -- waiting above for a dying connection's transaction this sees that transaction's rows.
        SELECT i.epoch, i.status INTO held, current_status FROM instances i WHERE i.pk = p_pks[n];
        r_pk := p_pks[n];
        r_status := current_status;
        IF p_retry AND FOUND AND n = ANY(p_of) AND NOT EXISTS (
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
