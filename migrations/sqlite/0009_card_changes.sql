-- Cashier API keys may carry a per-day points limit, as staff accounts do since 0008; both are
-- checked inside the ledger transaction.
ALTER TABLE api_keys ADD COLUMN max_points_per_day BIGINT;

-- A publish step reads the next holders of a template by serial: without this index each step
-- read and sorted every holder of the template.
CREATE INDEX passes_template_serial ON passes(template_id, serial_number);
