-- Holds (checkout): points reserved for a payment, then captured, voided or expired, once.
-- `members.held` is the sum of the member's open holds: the available balance is points - held,
-- and no change may take the balance below what is held.
ALTER TABLE members ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
ALTER TABLE members ADD CONSTRAINT members_held_covered CHECK (held >= 0 AND points >= held);
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
