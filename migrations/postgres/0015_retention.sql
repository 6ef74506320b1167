-- Retention (issue 16): a program may erase members with no activity (a purchase, a redemption,
-- a refund, a consent given) for this many months, by a claimed job. NULL (the default): members
-- are kept until erased on request.
ALTER TABLE programs ADD COLUMN retention_months BIGINT;
-- The retention job reads members by age of their membership.
CREATE INDEX members_program_created ON members(program_id, created_at);
-- The purge of old logs finds them without reading every row.
CREATE INDEX passes_fetched ON passes(last_fetched_at) WHERE last_fetched_at IS NOT NULL;
CREATE INDEX registrations_pushed ON registrations(last_push_at) WHERE last_push_at IS NOT NULL;
CREATE INDEX google_events_received ON google_events(received_at);
