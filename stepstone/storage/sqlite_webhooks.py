"""The outbox trigger of lifecycle webhooks on SQLite (a Stepstone extension; the rest is
``sql.webhooks``).

A TEMP trigger on the store's one write connection (the migrations runner holds no triggers)
writes the outbox row inside whatever transaction changes an instance's status: a release, a
terminate, a batched write.
"""

from __future__ import annotations

import sqlite3

_NOTIFIED = "('errored', 'complete', 'terminated', 'paused')"

_TRIGGER = f"""
CREATE TEMP TRIGGER IF NOT EXISTS stepstone_webhook_outbox AFTER UPDATE OF status ON instances
FOR EACH ROW WHEN NEW.status <> OLD.status AND NEW.status IN {_NOTIFIED}
BEGIN
    INSERT OR IGNORE INTO webhook_deliveries (hook_pk, instance_pk, workflow_name,
        instance_id, event, error, at, state, next_attempt_at)
    SELECT h.pk, NEW.pk, w.name, NEW.id, e.name, NEW.error, NEW.modified_on, 'pending',
        NEW.modified_on
    FROM webhooks h JOIN workflows w ON w.pk = h.workflow_pk,
        (SELECT NEW.status AS name UNION ALL SELECT 'rolledBack'
            WHERE OLD.status = 'rollingBack'
                AND NEW.status IN ('errored', 'terminated', 'complete')) e
    WHERE h.workflow_pk = NEW.workflow_pk AND h.events LIKE '%,' || e.name || ',%';
END
"""


def install(conn: sqlite3.Connection) -> None:
    """Install the outbox trigger on the write connection (nothing before the migration)."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'webhook_deliveries'"
    ).fetchone()
    if found is not None:
        conn.execute(_TRIGGER)
