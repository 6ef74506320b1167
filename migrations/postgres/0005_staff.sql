-- Staff who sign in to the web UI (designer, cashier page), and their sessions.

CREATE TABLE staff_users (
    id            TEXT PRIMARY KEY,
    -- Lower-cased; the sign-in name.
    email         TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    -- Argon2id in PHC string form.
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    disabled_at   BIGINT
);

-- A session cookie's SHA-256, never the cookie itself; the CSRF token its forms must carry.
CREATE TABLE staff_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES staff_users(id),
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX staff_sessions_expiry ON staff_sessions(expires_at);
