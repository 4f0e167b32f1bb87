-- Counting live leases (the limit on running instances across all workers) reads only these.
CREATE INDEX instances_leased ON instances (lease_expires) WHERE lease_owner IS NOT NULL;
