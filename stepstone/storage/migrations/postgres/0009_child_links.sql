-- step.run_workflow (a Stepstone extension): which instance started which.
CREATE TABLE child_links (
    child_pk BIGINT PRIMARY KEY,
    parent_pk BIGINT NOT NULL,
    detached INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX child_links_by_parent ON child_links (parent_pk, child_pk);

-- The transaction that ends a child (whichever write does it: a release, a terminate) makes
-- its parent runnable and wakes the workers, exactly as a delivered event does: no polling,
-- and any worker may take the parent up.
CREATE FUNCTION stepstone_wake_parent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE instances SET wake_seq = wake_seq + 1,
        runnable_at = CASE WHEN status IN ('waiting', 'running', 'waitingForPause',
            'rollingBack') THEN NEW.modified_on ELSE runnable_at END,
        priority = CASE WHEN status = 'waiting' THEN 0 ELSE priority END
    WHERE pk = (SELECT parent_pk FROM child_links WHERE child_pk = NEW.pk);
    IF FOUND THEN
        PERFORM pg_notify('stepstone_wake', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER instances_child_ended AFTER UPDATE OF status ON instances FOR EACH ROW
    WHEN (NEW.status IN ('complete', 'errored', 'terminated')
        AND OLD.status NOT IN ('complete', 'errored', 'terminated'))
    EXECUTE FUNCTION stepstone_wake_parent();
