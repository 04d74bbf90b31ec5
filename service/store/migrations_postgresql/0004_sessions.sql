-- Dashboard sessions kept server-side (as SQLite's schema 6): signing out ends one for good, on every
-- replica and across restarts. The cookie carries only the signed, random session id; token_digest (an
-- HMAC of the API token it was opened with) ends the session when that token leaves JOBHOOK_API_TOKENS.
CREATE TABLE sessions (
    id           TEXT COLLATE "C" PRIMARY KEY,
    token_digest TEXT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    expires_at   DOUBLE PRECISION NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
