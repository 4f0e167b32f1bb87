-- step.run_workflow (a Stepstone extension): which instance started which. The transaction
-- that ends a child makes its parent runnable (a TEMP trigger the store installs at open, as
-- these migrations hold no triggers).
CREATE TABLE child_links (
    child_pk INTEGER PRIMARY KEY,
    parent_pk INTEGER NOT NULL,
    detached INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX child_links_by_parent ON child_links (parent_pk, child_pk);
