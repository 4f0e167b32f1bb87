-- The portable mode (postgresql+portable://, storage/postgres_portable.py), for engines without
-- advisory locks or LISTEN/NOTIFY.

-- Its locks: a row per lock, locked by an upsert until the transaction ends. Outside the public
-- schema, as the commit marks are (a PostgreSQL mechanism, not the data model). IF NOT EXISTS:
-- a portable starter creates it before taking the migrations' lock, which is one of its rows.
CREATE TABLE IF NOT EXISTS stepstone_internal.locks (name TEXT PRIMARY KEY);

-- 0009's trigger function, silent on connections that set stepstone.notify to off (every
-- connection of the portable mode does, as it starts); unset, as on every other connection,
-- it notifies as before.
CREATE OR REPLACE FUNCTION stepstone_wake_parent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE instances SET wake_seq = wake_seq + 1,
        runnable_at = CASE WHEN status IN ('waiting', 'running', 'waitingForPause',
            'rollingBack') THEN NEW.modified_on ELSE runnable_at END,
        priority = CASE WHEN status = 'waiting' THEN 0 ELSE priority END
    WHERE pk = (SELECT parent_pk FROM child_links WHERE child_pk = NEW.pk);
    IF FOUND AND current_setting('stepstone.notify', true) IS DISTINCT FROM 'off' THEN
        PERFORM pg_notify('stepstone_wake', '');
    END IF;
    RETURN NULL;
END
$$;
