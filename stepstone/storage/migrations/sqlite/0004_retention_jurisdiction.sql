-- Cloudflare's 2026 retention default and jurisdiction.
-- retention_fallback_ms: what an ended instance of this workflow keeps when neither it, its
-- version nor its account sets a retention. NULL means DEFAULT_RETENTION_MS (7 days, the paid
-- default for Workflows created since 2026-09-10). Workflows that exist when this migration
-- runs were created under the 30-day default and keep it.
ALTER TABLE workflows ADD COLUMN retention_fallback_ms INTEGER;
UPDATE workflows SET retention_fallback_ms = 2592000000;
-- eu, fedramp or us; set once, never changed (10209).
ALTER TABLE workflows ADD COLUMN jurisdiction TEXT;
