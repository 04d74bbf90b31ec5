-- jobhook schema 3: notifications through a durable outbox, provider health, stopped destinations.

-- One row per event; its id is the Standard Webhooks webhook-id, the same on every retry and resend.
CREATE TABLE notifications (
    id         TEXT PRIMARY KEY,
    type       TEXT NOT NULL,
    job_id     TEXT REFERENCES jobs (id) ON DELETE CASCADE,
    provider   TEXT,
    payload    TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX notifications_job ON notifications (job_id);

-- One row per (event, destination), written in the same transaction as the change that caused it.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    notification_id TEXT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    destination     TEXT NOT NULL CHECK (destination IN ('slack', 'email', 'webhook')),
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    delivered_at    REAL,
    UNIQUE (notification_id, destination)
);
CREATE INDEX outbox_due ON outbox (destination, next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_status ON outbox (status, id);

-- Callback health and balance per provider (SPEC §5, provider events of SPEC §6).
CREATE TABLE provider_state (
    provider        TEXT PRIMARY KEY,
    polled_in_a_row INTEGER NOT NULL DEFAULT 0,
    degraded        INTEGER NOT NULL DEFAULT 0,
    credits         REAL,
    credits_low     INTEGER NOT NULL DEFAULT 0,
    updated_at      REAL NOT NULL
) WITHOUT ROWID;

-- A destination that answered 410 Gone is stopped until an operator resends.
CREATE TABLE destination_state (
    destination TEXT PRIMARY KEY,
    stopped     TEXT,
    updated_at  REAL NOT NULL
) WITHOUT ROWID;
