-- Cashier API keys may carry a per-day points limit, as staff accounts do since 0008; both are
-- checked inside the ledger transaction.
ALTER TABLE api_keys ADD COLUMN max_points_per_day BIGINT;
