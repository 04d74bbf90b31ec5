-- jobhook schema 1: jobs, their history, callback receipts, and what is due.
-- Times are Unix seconds (REAL). JSON columns hold compact JSON text.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE jobs (
    id                      TEXT PRIMARY KEY,
    provider                TEXT NOT NULL,
    provider_task_id        TEXT,
    status                  TEXT NOT NULL CHECK (status IN
                              ('queued', 'submitted', 'processing', 'completed', 'failed', 'timed_out')),
    request                 TEXT NOT NULL,
    metadata                TEXT,
    images                  TEXT,
    error                   TEXT,
    resolved_by             TEXT CHECK (resolved_by IN ('callback', 'poll', 'submit')),
    callback_url_registered INTEGER NOT NULL DEFAULT 0,
    submitted_by_backend    INTEGER NOT NULL DEFAULT 0,
    submit_state            TEXT CHECK (submit_state IN ('sending', 'done', 'uncertain')),
    submit_attempts         INTEGER NOT NULL DEFAULT 0,
    idempotency_key         TEXT UNIQUE,
    request_hash            TEXT,
    created_at              REAL NOT NULL,
    submitted_at            REAL,
    updated_at              REAL NOT NULL,
    finished_at             REAL,
    cost_usd                REAL
);

-- One task id belongs to one job of a provider: a second job can never bind it.
CREATE UNIQUE INDEX jobs_provider_task ON jobs (provider, provider_task_id)
    WHERE provider_task_id IS NOT NULL;
-- The list: newest first (ids are ULIDs, so id order is creation order), filtered by status/provider.
CREATE INDEX jobs_status_id ON jobs (status, id);
CREATE INDEX jobs_provider_id ON jobs (provider, id);

CREATE TABLE job_events (
    id      INTEGER PRIMARY KEY,
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at      REAL NOT NULL,
    type    TEXT NOT NULL,
    outcome TEXT,
    detail  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- One row per (job, callback event): the second delivery of the same event is a duplicate.
CREATE TABLE callback_receipts (
    job_id    TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    event_key TEXT NOT NULL,
    first_at  REAL NOT NULL,
    last_at   REAL NOT NULL,
    count     INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (job_id, event_key)
) WITHOUT ROWID;

-- Deliveries refused before a job could be named (bad token, unknown job): a bounded log.
CREATE TABLE refused_callbacks (
    id     INTEGER PRIMARY KEY,
    at     REAL NOT NULL,
    code   TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);

-- What must happen later, and when: the poller sleeps until the earliest due_at.
-- kind 'submit' (a queued job's next attempt), 'poll', 'deadline' (JOBHOOK_JOB_TIMEOUT).
-- A claimed row has its due_at pushed forward (a lease): if jobhook dies, the row comes due again.
CREATE TABLE due (
    job_id   TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind     TEXT NOT NULL CHECK (kind IN ('submit', 'poll', 'deadline')),
    provider TEXT NOT NULL,
    due_at   REAL NOT NULL,
    attempt  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, kind)
) WITHOUT ROWID;
CREATE INDEX due_at ON due (due_at);
CREATE INDEX due_provider_at ON due (provider, due_at);
