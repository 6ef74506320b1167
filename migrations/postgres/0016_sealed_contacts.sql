-- Members' e-mail and phone sealed at rest (src/privacy.rs): `email` and `phone` hold sealed
-- values (`v1.<key id>.<base64>`, AES-256-GCM) and are found through keyed hashes (HMAC-SHA256
-- of the normalised value), indexed per program in place of the plain values. A value written
-- before this migration stays plain, its hash NULL, until the server's next start (or
-- `tessera keys rotate`) seals it.
ALTER TABLE members ADD COLUMN email_hash TEXT;
ALTER TABLE members ADD COLUMN phone_hash TEXT;
DROP INDEX members_email;
DROP INDEX members_phone;
CREATE INDEX members_email_hash ON members(program_id, email_hash);
CREATE INDEX members_phone_hash ON members(program_id, phone_hash);
