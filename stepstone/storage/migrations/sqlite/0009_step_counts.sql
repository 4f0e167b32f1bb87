-- Cheap reads: one step's events by an index, and the number of steps kept beside the instance,
-- so a status poll or a step fetch costs the same at 1 step as at 10,000.
-- The name before the kind: the events of every step with one name are one range of it, so
-- the lookup stays one range whatever the planner knows (or guesses) of the kinds.
CREATE INDEX instance_events_by_step ON instance_events (instance_pk, step_name, step_kind, event_id);
-- Distinct (step_kind, step_name) groups in each instance's history: the steps GET instance
-- lists. A narrow table of its own rather than a column of instances: it changes with every
-- step, and on PostgreSQL an update of this row costs a fraction of one of the instance row.
CREATE TABLE instance_step_counts (
    instance_pk INTEGER PRIMARY KEY,
    steps INTEGER NOT NULL
);
INSERT INTO instance_step_counts (instance_pk, steps)
SELECT instance_pk, count(*) FROM (
    SELECT DISTINCT instance_pk, step_kind, step_name FROM instance_events
    WHERE step_kind IS NOT NULL AND step_name IS NOT NULL
) GROUP BY instance_pk;
-- Kept by the database at write time, whichever path writes: a group's first event adds a step
-- (no earlier event of that group), removing a group's last event takes it away. SQLite fires
-- row triggers as each row is written, so a statement of many rows counts each group once.
CREATE TRIGGER instance_events_step_added AFTER INSERT ON instance_events
WHEN NEW.step_kind IS NOT NULL AND NEW.step_name IS NOT NULL
BEGIN
    INSERT INTO instance_step_counts (instance_pk, steps)
    SELECT NEW.instance_pk, 1 WHERE NOT EXISTS (
        SELECT 1 FROM instance_events e
        WHERE e.instance_pk = NEW.instance_pk AND e.step_name = NEW.step_name
        AND e.step_kind = NEW.step_kind AND e.event_id < NEW.event_id
    )
    ON CONFLICT (instance_pk) DO UPDATE SET steps = steps + 1;
END;
CREATE TRIGGER instance_events_step_removed AFTER DELETE ON instance_events
WHEN OLD.step_kind IS NOT NULL AND OLD.step_name IS NOT NULL
BEGIN
    UPDATE instance_step_counts SET steps = steps - 1
    WHERE instance_pk = OLD.instance_pk AND NOT EXISTS (
        SELECT 1 FROM instance_events e
        WHERE e.instance_pk = OLD.instance_pk AND e.step_name = OLD.step_name
        AND e.step_kind = OLD.step_kind
    );
END;
-- A deleted instance's pk may be given to the next one created.
CREATE TRIGGER instances_step_count_removed AFTER DELETE ON instances
BEGIN
    DELETE FROM instance_step_counts WHERE instance_pk = OLD.pk;
END;
