-- Google Wallet: which class each template version became, each member's object, the
-- notifications each object was sent (Google allows 3 per 24 h), and members whose object is
-- out of date (one row per member however many changes: coalescing).

CREATE TABLE google_classes (
    template_id TEXT PRIMARY KEY REFERENCES templates(id),
    class_id    TEXT NOT NULL,
    version     BIGINT NOT NULL,
    synced_at   BIGINT NOT NULL
);

CREATE TABLE google_objects (
    member_id     TEXT PRIMARY KEY REFERENCES members(id),
    object_id     TEXT NOT NULL UNIQUE,
    class_id      TEXT NOT NULL,
    synced_points BIGINT NOT NULL,
    synced_at     BIGINT NOT NULL
);

CREATE TABLE google_notifications (
    object_id TEXT NOT NULL,
    sent_at   BIGINT NOT NULL,
    PRIMARY KEY (object_id, sent_at)
);

CREATE TABLE google_pending (
    member_id    TEXT PRIMARY KEY REFERENCES members(id),
    -- Bumped by every change; a sync deletes the row only if it is unchanged since it read it.
    queued_at    BIGINT NOT NULL,
    available_at BIGINT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX google_pending_due ON google_pending(available_at);

-- Google's signed save/delete callbacks, one row per nonce (Google may deliver twice).
CREATE TABLE google_events (
    nonce       TEXT PRIMARY KEY,
    object_id   TEXT NOT NULL,
    member_id   TEXT REFERENCES members(id),
    event_type  TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX google_events_member ON google_events(member_id, received_at);

-- Messages marketers send to cards (addMessage), one row per card; the message id comes from
-- the request's Idempotency-Key, so a retried request queues nothing twice.
CREATE TABLE google_messages (
    message_id   TEXT NOT NULL,
    member_id    TEXT NOT NULL REFERENCES members(id),
    header       TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    available_at BIGINT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, member_id)
);
CREATE INDEX google_messages_due ON google_messages(available_at);
