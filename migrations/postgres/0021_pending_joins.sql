-- Double opt-in (the join page): a join that gives an e-mail address waits here until the link
-- e-mailed to that address is opened, so nobody can take a card in someone else's name or learn
-- from the page whether an address is a member's. Only a SHA-256 of the link's token is kept;
-- the form's contents (name, e-mail, phone, birthday, the consents as shown) are sealed by the
-- key ring, bound to the token's hash. Rows are deleted once expired.
CREATE TABLE pending_joins (
    token_hash TEXT PRIMARY KEY,
    program_id TEXT NOT NULL REFERENCES programs(id),
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX pending_joins_expiry ON pending_joins(expires_at);
