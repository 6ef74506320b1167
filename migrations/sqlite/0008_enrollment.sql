-- Joining and scanning: join-page settings, members' contact details, consent records, cashier
-- limits on staff accounts.

-- Join-page settings as one JSON document (domain::enrollment::EnrollmentSettings).
ALTER TABLE programs ADD COLUMN enrollment TEXT NOT NULL DEFAULT '{}';

-- Normalised for matching: lower-case e-mail, digits-only phone with its leading +.
ALTER TABLE members ADD COLUMN email TEXT;
ALTER TABLE members ADD COLUMN phone TEXT;
ALTER TABLE members ADD COLUMN birthday TEXT;
CREATE INDEX members_email ON members(program_id, email);
CREATE INDEX members_phone ON members(program_id, phone);

-- Proof of consent: what was shown (the exact text and policy version), what was answered, when.
-- Rows are never updated; a change of mind is a new row.
CREATE TABLE consents (
    id             TEXT PRIMARY KEY,
    member_id      TEXT NOT NULL REFERENCES members(id),
    kind           TEXT NOT NULL,
    granted        BIGINT NOT NULL,
    policy_version TEXT NOT NULL,
    policy_url     TEXT,
    text_shown     TEXT NOT NULL,
    source         TEXT NOT NULL,
    recorded_at    BIGINT NOT NULL
);
CREATE INDEX consents_member ON consents(member_id, recorded_at);

-- Cashier limits for staff on the scan page.
ALTER TABLE staff_users ADD COLUMN max_points_per_operation BIGINT;
ALTER TABLE staff_users ADD COLUMN max_points_per_day BIGINT;

-- Points moved per actor (API key or staff account) per day, for the cashier's daily limit.
CREATE INDEX ledger_entries_actor ON ledger_entries(api_key_id, created_at);
