-- Retention (issue 16): a program may erase members with no activity (a purchase, a redemption,
-- a refund, a consent given) for this many months, by a claimed job. NULL (the default): members
-- are kept until erased on request.
ALTER TABLE programs ADD COLUMN retention_months BIGINT;
-- The retention job reads members by age of their membership.
CREATE INDEX members_program_created ON members(program_id, created_at);
