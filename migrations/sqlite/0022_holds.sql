-- Holds (checkout): points reserved for a payment, then captured, voided or expired, once.
-- `members.held` is the sum of the member's open holds: the available balance is points - held,
-- and no change may take the balance below what is held.
ALTER TABLE members ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
CREATE TABLE holds (
    id           TEXT PRIMARY KEY,
    member_id    TEXT NOT NULL REFERENCES members(id),
    points       BIGINT NOT NULL CHECK (points > 0),
    -- held | captured | voided | expired
    state        TEXT NOT NULL,
    captured     BIGINT,
    entry_id     TEXT,
    external_ref TEXT,
    api_key_id   TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    resolved_at  BIGINT
);
CREATE INDEX holds_member ON holds(member_id, created_at);
CREATE INDEX holds_due ON holds(expires_at) WHERE state = 'held';
-- SQLite cannot add a CHECK to an existing table: a trigger guards the same rule.
CREATE TRIGGER members_held_covered BEFORE UPDATE OF points, held ON members
WHEN NEW.held < 0 OR NEW.points < NEW.held
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: held points exceed the balance');
END;
