-- The audit log (issue 16): who did what to which target, when, from where, with what outcome.
-- One row per request a staff account or an API key made that wrote something or read a member's
-- data. Rows are never updated or deleted (the triggers refuse it). Nothing secret is written: the
-- action is the route's template (never the URL with its query), the target an id.
CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,       -- UUIDv7: ordered by time
    at          BIGINT NOT NULL,        -- ms since the epoch
    actor_kind  TEXT NOT NULL,          -- 'api_key', 'staff' or 'cli'
    actor_id    TEXT NOT NULL,          -- the key's id, the staff account's id, the OS user
    actor_label TEXT NOT NULL,          -- the key's name, the account's e-mail
    action      TEXT NOT NULL,          -- 'POST /api/v1/members/{member_id}/erase'
    target_kind TEXT,                   -- 'member', 'program', 'template', 'key', ...
    target_id   TEXT,
    client_ip   TEXT,
    status      BIGINT NOT NULL,        -- the HTTP status answered (0 for a CLI command that failed)
    is_write    BIGINT NOT NULL         -- 0 for a read of member data
);
CREATE INDEX audit_log_at ON audit_log(at, id);
CREATE INDEX audit_log_actor ON audit_log(actor_id, at);
CREATE INDEX audit_log_target ON audit_log(target_id, at);

-- The members a request read or changed (several for a list or an import), for a breach notice:
-- `tessera audit affected --since T`.
CREATE TABLE audit_members (
    audit_id  TEXT NOT NULL,
    member_id TEXT NOT NULL,
    at        BIGINT NOT NULL,
    PRIMARY KEY (audit_id, member_id)
);
CREATE INDEX audit_members_at ON audit_members(at, member_id);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_members_append_only BEFORE UPDATE OR DELETE ON audit_members
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
