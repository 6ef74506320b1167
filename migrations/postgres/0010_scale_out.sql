-- Several instances on one database (issue 13): a worker claims the rows it works on outside a
-- transaction (pushes, Google calls) with a lease, so exactly one instance handles a row. The
-- owner is a per-process instance id; a row whose lease ran out (its instance crashed) is taken
-- over by another. On SQLite (one process per file) the columns stay NULL.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until BIGINT;
ALTER TABLE google_pending ADD COLUMN claimed_by TEXT;
ALTER TABLE google_pending ADD COLUMN claimed_until BIGINT;
ALTER TABLE google_messages ADD COLUMN claimed_by TEXT;
ALTER TABLE google_messages ADD COLUMN claimed_until BIGINT;
-- A message added to its card is kept (sent_at set) instead of deleted, so a retried request with
-- the same Idempotency-Key (the same message id) finds it and queues nothing: sent once.
ALTER TABLE google_messages ADD COLUMN sent_at BIGINT;

-- Jobs that only one instance at a time should run (expiry, purges): one row per job.
CREATE TABLE worker_leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Throttles shared by the instances on one PostgreSQL database (`ratelimit`): GCRA state per
-- key (the theoretical arrival time), and failed staff sign-ins per key. Unused on SQLite,
-- whose one process keeps them in memory.
CREATE TABLE throttles (
    key TEXT PRIMARY KEY,
    tat BIGINT NOT NULL
);
CREATE TABLE sign_in_failures (
    key      TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    until    BIGINT NOT NULL
);
