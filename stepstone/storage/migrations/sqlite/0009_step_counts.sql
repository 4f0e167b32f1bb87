-- Cheap reads: one step's events by an index, and the number of steps kept on the instance row,
-- so a status poll or a step fetch costs the same at 1 step as at 10,000.
-- The name before the kind: the events of every step with one name are one range of it, so
-- the lookup stays one range whatever the planner knows (or guesses) of the kinds.
CREATE INDEX instance_events_by_step ON instance_events (instance_pk, step_name, step_kind, event_id);
-- Distinct (step_kind, step_name) groups in the instance's history: the steps GET instance lists.
ALTER TABLE instances ADD COLUMN step_count INTEGER NOT NULL DEFAULT 0;
UPDATE instances SET step_count = (
    SELECT count(*) FROM (
        SELECT DISTINCT step_kind, step_name FROM instance_events
        WHERE instance_pk = instances.pk AND step_kind IS NOT NULL AND step_name IS NOT NULL
    )
);
-- Kept by the database at write time, whichever path writes: a group's first event adds a step
-- (no earlier event of that group), removing a group's last event takes it away. SQLite fires
-- row triggers as each row is written, so a statement of many rows counts each group once.
CREATE TRIGGER instance_events_step_added AFTER INSERT ON instance_events
WHEN NEW.step_kind IS NOT NULL AND NEW.step_name IS NOT NULL
BEGIN
    UPDATE instances SET step_count = step_count + 1
    WHERE pk = NEW.instance_pk AND NOT EXISTS (
        SELECT 1 FROM instance_events e
        WHERE e.instance_pk = NEW.instance_pk AND e.step_kind = NEW.step_kind
        AND e.step_name = NEW.step_name AND e.event_id < NEW.event_id
    );
END;
CREATE TRIGGER instance_events_step_removed AFTER DELETE ON instance_events
WHEN OLD.step_kind IS NOT NULL AND OLD.step_name IS NOT NULL
BEGIN
    UPDATE instances SET step_count = step_count - 1
    WHERE pk = OLD.instance_pk AND NOT EXISTS (
        SELECT 1 FROM instance_events e
        WHERE e.instance_pk = OLD.instance_pk AND e.step_kind = OLD.step_kind
        AND e.step_name = OLD.step_name
    );
END;
