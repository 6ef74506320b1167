-- The push dispatcher: retry bookkeeping on outbox rows, and the last push per registration.

ALTER TABLE outbox ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
-- Not before this time (milliseconds): backoff after a failed push.
ALTER TABLE outbox ADD COLUMN available_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error TEXT;

ALTER TABLE registrations ADD COLUMN last_push_at BIGINT;
ALTER TABLE registrations ADD COLUMN last_push_result TEXT;
