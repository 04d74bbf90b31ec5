-- jobhook schema 6: dashboard sessions kept server-side, so that signing out ends one for good (on every
-- replica, and across restarts). The cookie carries only the signed, random session id; token_digest
-- (an HMAC of the API token it was opened with) ends the session when that token leaves
-- JOBHOOK_API_TOKENS. Expired rows are deleted whenever a session is opened.
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    token_digest TEXT NOT NULL,
    created_at   REAL NOT NULL,
    expires_at   REAL NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
