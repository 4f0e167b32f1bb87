-- Cheap reads: one step's events by an index, and the number of steps kept beside the instance,
-- so a status poll or a step fetch costs the same at 1 step as at 10,000.
-- The name before the kind: the events of every step with one name are one range of it, so
-- the lookup stays one range whatever the planner knows (or guesses) of the kinds.
CREATE INDEX instance_events_by_step ON instance_events (instance_pk, step_name, step_kind, event_id);
-- Distinct (step_kind, step_name) groups in each instance's history: the steps GET instance
-- lists. A narrow table of its own rather than a column of instances: it changes with every
-- step, and an update of the wide instance row (new entries in each of its indexes) cost a
-- 2,000-step run 130-270 us of server CPU a step against 15-40 us for this one (HOT: half of
-- each page is left free, and only the primary key indexes it).
CREATE TABLE instance_step_counts (
    instance_pk BIGINT PRIMARY KEY,
    steps BIGINT NOT NULL
) WITH (fillfactor = 50);
INSERT INTO instance_step_counts (instance_pk, steps)
SELECT instance_pk, count(DISTINCT (step_kind, step_name)) FROM instance_events
WHERE step_kind IS NOT NULL AND step_name IS NOT NULL GROUP BY instance_pk;

-- Kept by the database at write time, whichever path writes. A group's first event adds a step:
-- an AFTER ROW trigger runs once the whole statement is in, so of a group's rows written by one
-- statement only the earliest finds no earlier event. Every writer holds the instance row
-- (FOR UPDATE) before it appends, so two transactions never add the same group at once.
-- "event_id + 0": a plain range on event_id lets the cached plan, made before the table has
-- statistics, walk instance_events_by_instance over the whole history on every insert.
CREATE FUNCTION stepstone_step_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM instance_events e
        WHERE e.instance_pk = NEW.instance_pk AND e.step_name = NEW.step_name
        AND e.step_kind = NEW.step_kind AND e.event_id + 0 < NEW.event_id
    ) THEN
        INSERT INTO instance_step_counts AS c (instance_pk, steps) VALUES (NEW.instance_pk, 1)
        ON CONFLICT (instance_pk) DO UPDATE SET steps = c.steps + 1;
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
    UPDATE instance_step_counts c SET steps = c.steps - d.n
    FROM (
        SELECT g.instance_pk, count(*) AS n
        FROM (
            SELECT DISTINCT instance_pk, step_kind, step_name FROM gone
            WHERE step_kind IS NOT NULL AND step_name IS NOT NULL
        ) g
        WHERE NOT EXISTS (
            SELECT 1 FROM instance_events e
            WHERE e.instance_pk = g.instance_pk AND e.step_name = g.step_name
            AND e.step_kind = g.step_kind
        )
        GROUP BY g.instance_pk
    ) d
    WHERE c.instance_pk = d.instance_pk;
    RETURN NULL;
END $$;
CREATE TRIGGER instance_events_steps_removed AFTER DELETE ON instance_events
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION stepstone_steps_removed();

-- A deleted instance takes its count with it.
CREATE FUNCTION stepstone_instances_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM instance_step_counts WHERE instance_pk IN (SELECT pk FROM gone);
    RETURN NULL;
END $$;
CREATE TRIGGER instances_step_count_removed AFTER DELETE ON instances
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION stepstone_instances_removed();
