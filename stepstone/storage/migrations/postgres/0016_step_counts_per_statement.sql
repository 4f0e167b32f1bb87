-- The step count of 0014, kept once per INSERT statement instead of once per row: a plpgsql row
-- trigger on each of a step's four events cost about 100 us of server CPU a step (W1 embedded,
-- 907 against 728 us a step with and without it), and a group-committed batch of many
-- instances' events is one statement, so one call counts the whole batch.
DROP TRIGGER instance_events_step_added ON instance_events;
DROP FUNCTION stepstone_step_added();

-- A group's first event adds a step: of the group's rows in this statement, the earliest, when
-- no earlier event of the group is stored. Every writer holds the instance row (FOR UPDATE)
-- before it appends, so two transactions never add the same group at once. "event_id + 0": a
-- plain range on event_id lets a plan cached before the table has statistics walk
-- instance_events_by_instance over the whole history.
CREATE FUNCTION stepstone_steps_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO instance_step_counts AS c (instance_pk, steps)
    SELECT g.instance_pk, count(*)
    FROM (
        SELECT a.instance_pk, a.step_kind, a.step_name, min(a.event_id) AS first_id
        FROM added a
        WHERE a.step_kind IS NOT NULL AND a.step_name IS NOT NULL
        GROUP BY a.instance_pk, a.step_kind, a.step_name
    ) g
    WHERE NOT EXISTS (
        SELECT 1 FROM instance_events e
        WHERE e.instance_pk = g.instance_pk AND e.step_name = g.step_name
        AND e.step_kind = g.step_kind AND e.event_id + 0 < g.first_id
    )
    GROUP BY g.instance_pk
    ON CONFLICT (instance_pk) DO UPDATE SET steps = c.steps + excluded.steps;
    RETURN NULL;
END $$;
CREATE TRIGGER instance_events_steps_added AFTER INSERT ON instance_events
REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION stepstone_steps_added();
