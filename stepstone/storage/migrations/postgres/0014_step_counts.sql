-- Cheap reads: one step's events by an index, and the number of steps kept on the instance row,
-- so a status poll or a step fetch costs the same at 1 step as at 10,000.
-- The name before the kind: the events of every step with one name are one range of it, so
-- the lookup stays one range whatever the planner knows (or guesses) of the kinds.
CREATE INDEX instance_events_by_step ON instance_events (instance_pk, step_name, step_kind, event_id);
-- Distinct (step_kind, step_name) groups in the instance's history: the steps GET instance lists.
ALTER TABLE instances ADD COLUMN step_count BIGINT NOT NULL DEFAULT 0;
UPDATE instances i SET step_count = c.n
FROM (
    SELECT instance_pk, count(DISTINCT (step_kind, step_name)) AS n FROM instance_events
    WHERE step_kind IS NOT NULL AND step_name IS NOT NULL GROUP BY instance_pk
) c
WHERE i.pk = c.instance_pk;

-- Kept by the database at write time, whichever path writes. A group's first event adds a step:
-- an AFTER ROW trigger runs once the whole statement is in, so of a group's rows written by one
-- statement only the earliest finds no earlier event. Every writer holds the instance row
-- (FOR UPDATE) before it appends, so two transactions never add the same group at once.
CREATE FUNCTION stepstone_step_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM instance_events e
        WHERE e.instance_pk = NEW.instance_pk AND e.step_kind = NEW.step_kind
        AND e.step_name = NEW.step_name AND e.event_id < NEW.event_id
    ) THEN
        UPDATE instances SET step_count = step_count + 1 WHERE pk = NEW.instance_pk;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER instance_events_step_added AFTER INSERT ON instance_events
FOR EACH ROW WHEN (NEW.step_kind IS NOT NULL AND NEW.step_name IS NOT NULL)
EXECUTE FUNCTION stepstone_step_added();

-- Removing a group's last event takes its step away: once per statement (a row trigger would
-- see every row of the statement gone and count a group once per row), one update per instance.
CREATE FUNCTION stepstone_steps_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE instances i SET step_count = i.step_count - d.n
    FROM (
        SELECT g.instance_pk, count(*) AS n
        FROM (
            SELECT DISTINCT instance_pk, step_kind, step_name FROM gone
            WHERE step_kind IS NOT NULL AND step_name IS NOT NULL
        ) g
        WHERE NOT EXISTS (
            SELECT 1 FROM instance_events e
            WHERE e.instance_pk = g.instance_pk AND e.step_kind = g.step_kind
            AND e.step_name = g.step_name
        )
        GROUP BY g.instance_pk
    ) d
    WHERE i.pk = d.instance_pk;
    RETURN NULL;
END $$;
CREATE TRIGGER instance_events_steps_removed AFTER DELETE ON instance_events
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION stepstone_steps_removed();
