-- Each provider's circuit (SPEC §8; as SQLite's schema 8), shared by every replica and kept across
-- restarts. No row: closed. `state` is 'closed' or 'open'; an open circuit past `open_until` is
-- half-open, and the job that claims `probe_job` (with a lease, `probe_until`) is the one that tries it.
CREATE TABLE provider_circuits (
    provider    TEXT PRIMARY KEY,
    state       TEXT NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open')),
    failures    INTEGER NOT NULL DEFAULT 0,
    open_until  DOUBLE PRECISION,
    cooldown    DOUBLE PRECISION,
    reason      TEXT,
    opened_at   DOUBLE PRECISION,
    probe_job   TEXT,
    probe_until DOUBLE PRECISION,
    updated_at  DOUBLE PRECISION NOT NULL
);
