-- Programs, card templates, members and their Apple passes.
-- Portable across SQLite and PostgreSQL (one storage implementation, sqlx Any driver):
-- text ids, BIGINT milliseconds since the epoch, 0/1 integers for booleans.

CREATE TABLE programs (
    id                   TEXT PRIMARY KEY,
    slug                 TEXT NOT NULL UNIQUE,
    name                 TEXT NOT NULL,
    pass_type_identifier TEXT NOT NULL,
    team_identifier      TEXT NOT NULL,
    organization_name    TEXT NOT NULL,
    created_at           BIGINT NOT NULL
);

-- A template's design is a JSON document; every change bumps version, which keys the
-- prepared-image cache and tells which passes show an older design.
CREATE TABLE templates (
    id          TEXT PRIMARY KEY,
    program_id  TEXT NOT NULL REFERENCES programs(id),
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    design      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX templates_program ON templates(program_id, created_at);

-- Rendered pass images (icon.png, icon@2x.png, ...), already at Apple's sizes.
CREATE TABLE template_images (
    template_id TEXT NOT NULL REFERENCES templates(id),
    file_name   TEXT NOT NULL,
    bytes       BLOB NOT NULL,
    PRIMARY KEY (template_id, file_name)
);

CREATE TABLE members (
    id           TEXT PRIMARY KEY,
    program_id   TEXT NOT NULL REFERENCES programs(id),
    display_name TEXT NOT NULL,
    external_id  TEXT,
    barcode      TEXT NOT NULL UNIQUE,
    -- Always the sum of the member's ledger entries; never negative.
    points       BIGINT NOT NULL DEFAULT 0 CHECK (points >= 0),
    created_at   BIGINT NOT NULL,
    UNIQUE (program_id, external_id)
);

CREATE TABLE passes (
    serial_number        TEXT PRIMARY KEY,
    member_id            TEXT NOT NULL UNIQUE REFERENCES members(id),
    template_id          TEXT NOT NULL REFERENCES templates(id),
    pass_type_identifier TEXT NOT NULL,
    authentication_token TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    -- Milliseconds; bumped with every change the pass shows (Last-Modified, update tags).
    updated_at           BIGINT NOT NULL
);
CREATE INDEX passes_template ON passes(template_id);

-- Append-only: entries are never updated or deleted.
CREATE TABLE ledger_entries (
    id         TEXT PRIMARY KEY,
    member_id  TEXT NOT NULL REFERENCES members(id),
    kind       TEXT NOT NULL,
    points     BIGINT NOT NULL,
    reason     TEXT,
    created_at BIGINT NOT NULL
) WITHOUT ROWID;
CREATE INDEX ledger_entries_member ON ledger_entries(member_id, created_at);

-- API keys: only a SHA-256 of the secret part is stored.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
