-- Events for the CRM (issue 19): one row per change, written in the change's own transaction.
-- `seq` orders them; `xid` is the writing transaction's id on PostgreSQL (0 on SQLite, whose
-- writers are serialised, so `seq` order is commit order). Readers walk (xid, seq) and, on
-- PostgreSQL, only see rows whose transaction is older than every running one, so a row that
-- commits late is never skipped by a cursor.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    program_id TEXT NOT NULL,
    member_id  TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    xid        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX events_order ON events (xid, seq);
CREATE INDEX events_created ON events (created_at);
CREATE INDEX events_member ON events (member_id);
