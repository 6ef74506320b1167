-- Card lifecycle and personal data (issue 16).
--
-- A card can be ended (its pass voided) and reissued under a new serial. The old pass stays, so
-- the devices that hold it fetch it voided; a member may therefore hold several passes, at most
-- one of them live (`ended_at IS NULL`). SQLite cannot drop a column's UNIQUE constraint, so
-- `passes` is rebuilt; `registrations` refers to it, so foreign keys are checked at commit.
--
-- The public download link gets a token of its own (`download_token`), separate from the
-- PassKit authentication token; both rotate on reissue. Existing passes keep their link working:
-- their download token starts as their authentication token.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE passes_new (
    serial_number        TEXT PRIMARY KEY,
    member_id            TEXT NOT NULL REFERENCES members(id),
    template_id          TEXT NOT NULL REFERENCES templates(id),
    pass_type_identifier TEXT NOT NULL,
    authentication_token TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    -- Milliseconds; bumped with every change the pass shows (Last-Modified, update tags).
    updated_at           BIGINT NOT NULL,
    last_fetched_at      BIGINT,
    download_token       TEXT NOT NULL,
    -- When the card was ended (voided): by an end, a reissue or an erasure.
    ended_at             BIGINT
);
INSERT INTO passes_new (serial_number, member_id, template_id, pass_type_identifier,
                        authentication_token, created_at, updated_at, last_fetched_at,
                        download_token, ended_at)
SELECT serial_number, member_id, template_id, pass_type_identifier, authentication_token,
       created_at, updated_at, last_fetched_at, authentication_token, NULL
FROM passes;
DROP TABLE passes;
ALTER TABLE passes_new RENAME TO passes;
CREATE INDEX passes_template ON passes(template_id);
CREATE INDEX passes_template_serial ON passes(template_id, serial_number);
CREATE INDEX passes_member ON passes(member_id, created_at);
-- At most one live card per member.
CREATE UNIQUE INDEX passes_live ON passes(member_id) WHERE ended_at IS NULL;
-- The registration sweep reads ended passes only.
CREATE INDEX passes_ended ON passes(ended_at) WHERE ended_at IS NOT NULL;

-- Which pass a member's Google object shows: a reissued card gets a new object.
ALTER TABLE google_objects ADD COLUMN serial_number TEXT;
UPDATE google_objects SET serial_number =
    (SELECT p.serial_number FROM passes p WHERE p.member_id = google_objects.member_id);

-- Erasure: when the member's personal data was removed. The row stays (its random id is the
-- pseudonym the ledger and the consent records keep), without name, contact or birthday.
ALTER TABLE members ADD COLUMN erased_at BIGINT;

-- The profile's version (name, contact details, birthday, external id): its ETag. A PATCH must
-- name the version it read (If-Match), so two writers cannot silently overwrite each other.
ALTER TABLE members ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
