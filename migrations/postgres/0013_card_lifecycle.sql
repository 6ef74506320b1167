-- Card lifecycle and personal data (issue 16).
--
-- A card can be ended (its pass voided) and reissued under a new serial. The old pass stays, so
-- the devices that hold it fetch it voided; a member may therefore hold several passes, at most
-- one of them live (`ended_at IS NULL`).
--
-- The public download link gets a token of its own (`download_token`), separate from the
-- PassKit authentication token; both rotate on reissue. Existing passes keep their link working:
-- their download token starts as their authentication token.
ALTER TABLE passes DROP CONSTRAINT passes_member_id_key;
ALTER TABLE passes ADD COLUMN download_token TEXT;
UPDATE passes SET download_token = authentication_token;
ALTER TABLE passes ALTER COLUMN download_token SET NOT NULL;
-- When the card was ended (voided): by an end, a reissue or an erasure.
ALTER TABLE passes ADD COLUMN ended_at BIGINT;
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
