-- The points ledger: program rules, entry details, spendable lots, idempotency keys, outbox.

-- Earn rule, expiry and tiers as one JSON document (ledger::LoyaltyRules).
ALTER TABLE programs ADD COLUMN rules TEXT NOT NULL DEFAULT '{}';
ALTER TABLE members ADD COLUMN tier TEXT;

ALTER TABLE ledger_entries ADD COLUMN amount_minor BIGINT;
ALTER TABLE ledger_entries ADD COLUMN external_ref TEXT;
ALTER TABLE ledger_entries ADD COLUMN channel TEXT;
ALTER TABLE ledger_entries ADD COLUMN store_id TEXT;
ALTER TABLE ledger_entries ADD COLUMN partner_id TEXT;
ALTER TABLE ledger_entries ADD COLUMN reverses_entry_id TEXT;
ALTER TABLE ledger_entries ADD COLUMN api_key_id TEXT;
-- An entry is reversed at most once. Partial indexes hold only the rows that have the value.
CREATE UNIQUE INDEX ledger_entries_reversal ON ledger_entries(reverses_entry_id) WHERE reverses_entry_id IS NOT NULL;
CREATE INDEX ledger_entries_ref ON ledger_entries(member_id, external_ref) WHERE external_ref IS NOT NULL;

-- What is left to spend of each credit, oldest first; sum(remaining) = the member's balance.
CREATE TABLE point_lots (
    id         TEXT PRIMARY KEY,
    member_id  TEXT NOT NULL REFERENCES members(id),
    entry_id   TEXT REFERENCES ledger_entries(id),
    points     BIGINT NOT NULL,
    remaining  BIGINT NOT NULL CHECK (remaining >= 0),
    earned_at  BIGINT NOT NULL,
    expires_at BIGINT
) WITHOUT ROWID;
CREATE INDEX point_lots_member ON point_lots(member_id, earned_at);
CREATE INDEX point_lots_expiry ON point_lots(expires_at) WHERE remaining > 0;

-- Balances from before lots existed become one lot each, never expiring.
INSERT INTO point_lots (id, member_id, entry_id, points, remaining, earned_at, expires_at)
SELECT 'migrated-' || id, id, NULL, points, points, created_at, NULL FROM members WHERE points > 0;

-- A retried write with the same key returns the stored response instead of writing again.
CREATE TABLE idempotency_keys (
    api_key_id   TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (api_key_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_age ON idempotency_keys(created_at);

-- Written in the same transaction as the change it announces; read by push and webhooks.
CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    topic        TEXT NOT NULL,
    member_id    TEXT,
    payload      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    processed_at BIGINT
) WITHOUT ROWID;
-- No secondary index: ids are time-ordered (UUIDv7), so the key itself orders the outbox.

-- Cashier keys may carry a per-operation points limit.
ALTER TABLE api_keys ADD COLUMN max_points BIGINT;
