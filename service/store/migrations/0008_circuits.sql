-- jobhook schema 8: each provider's circuit (SPEC §8), shared by every process on the database and kept
-- across restarts. No row: closed. `state` is 'closed' or 'open'; an open circuit past `open_until` is
-- half-open, and the job that claims `probe_job` (with a lease, `probe_until`) is the one that tries it.
CREATE TABLE provider_circuits (
    provider    TEXT PRIMARY KEY,
    state       TEXT NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open')),
    failures    INTEGER NOT NULL DEFAULT 0,
    open_until  REAL,
    cooldown    REAL,
    reason      TEXT,
    opened_at   REAL,
    probe_job   TEXT,
    probe_until REAL,
    updated_at  REAL NOT NULL
) WITHOUT ROWID;
