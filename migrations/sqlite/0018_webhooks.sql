-- Webhooks (issue 19): endpoints that receive the events of `events`, signed with a secret of
-- their own (sealed by the privacy key ring: it must be read back to sign). `types` is a
-- comma-separated list of event types, '' for all. An endpoint that failed every delivery since
-- `failing_since` for longer than `events.disable_after_hours` is disabled (`disabled_at`).
CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY,
    url           TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    types         TEXT NOT NULL DEFAULT '',
    secret        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    failing_since BIGINT,
    disabled_at   BIGINT
);

-- One row per (endpoint, event): written by the fan-out job past its cursor, claimed by the
-- delivery worker (claimed_by/claimed_until on PostgreSQL, as the outbox), due at `next_at`
-- (NULL once delivered or given up). The rows are the delivery log.
CREATE TABLE webhook_deliveries (
    id            TEXT PRIMARY KEY,
    webhook_id    TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    next_at       BIGINT,
    status        TEXT NOT NULL DEFAULT 'pending',
    attempts      BIGINT NOT NULL DEFAULT 0,
    last_status   BIGINT,
    last_error    TEXT,
    latency_ms    BIGINT,
    last_attempt_at BIGINT,
    delivered_at  BIGINT,
    claimed_by    TEXT,
    claimed_until BIGINT,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE next_at IS NOT NULL;
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, created_at);

-- How far a reader of `events` got (the webhook fan-out): its (xid, seq).
CREATE TABLE event_cursors (
    name TEXT PRIMARY KEY,
    xid  BIGINT NOT NULL,
    seq  BIGINT NOT NULL
);
INSERT INTO event_cursors (name, xid, seq) VALUES ('webhooks', 0, 0);
