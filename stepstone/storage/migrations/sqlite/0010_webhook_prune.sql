-- Finished deliveries (delivered, or failed for good) are pruned after a retention; their
-- next_attempt_at is when they finished, and this index finds the old ones without a scan.
CREATE INDEX webhook_deliveries_done ON webhook_deliveries (next_attempt_at) WHERE state <> 'pending';
