-- Group commit of activations' ends: many releases in one statement, each by the rules of
-- stepstone_release (0003), so concurrent activations ending share a round trip and a WAL
-- flush. Rows are locked in pk order first, as the other many-instance writes lock them.

-- p_of[k] is the position in p_pks (1-based) of the release event k belongs to.
CREATE FUNCTION stepstone_release_many(
    p_pks BIGINT[], p_epochs BIGINT[], p_wake_seqs BIGINT[], p_statuses TEXT[],
    p_runnable_ats BIGINT[], p_outputs BYTEA[], p_errors BYTEA[], p_rollbacks BYTEA[],
    p_nows BIGINT[], p_near_wake_ms BIGINT, p_default_retention BIGINT,
    p_of INTEGER[], p_ts BIGINT[], p_type TEXT[], p_kind TEXT[], p_name TEXT[], p_data BYTEA[]
) RETURNS TABLE (r_pk BIGINT, r_status TEXT) LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER;
BEGIN
    PERFORM 1 FROM instances i WHERE i.pk = ANY(p_pks) ORDER BY i.pk FOR UPDATE;
    FOR n IN 1 .. cardinality(p_pks) LOOP
        r_pk := p_pks[n];
        r_status := stepstone_release(
            p_pks[n], p_epochs[n], p_wake_seqs[n], p_statuses[n], p_runnable_ats[n],
            p_outputs[n], p_errors[n], p_rollbacks[n], p_nows[n], p_nows[n] + p_near_wake_ms,
            p_default_retention,
            ARRAY(SELECT e.v FROM unnest(p_of, p_ts) WITH ORDINALITY AS e(g, v, k)
                WHERE e.g = n ORDER BY e.k),
            ARRAY(SELECT e.v FROM unnest(p_of, p_type) WITH ORDINALITY AS e(g, v, k)
                WHERE e.g = n ORDER BY e.k),
            ARRAY(SELECT e.v FROM unnest(p_of, p_kind) WITH ORDINALITY AS e(g, v, k)
                WHERE e.g = n ORDER BY e.k),
            ARRAY(SELECT e.v FROM unnest(p_of, p_name) WITH ORDINALITY AS e(g, v, k)
                WHERE e.g = n ORDER BY e.k),
            ARRAY(SELECT e.v FROM unnest(p_of, p_data) WITH ORDINALITY AS e(g, v, k)
                WHERE e.g = n ORDER BY e.k));
        RETURN NEXT;
    END LOOP;
END $$;
