-- jobhook schema 2: images jobhook holds itself, and two more kinds of due work.

-- Per image index, the file jobhook keeps ({"file", "content_type", "bytes", "sha256"}) or null.
ALTER TABLE jobs ADD COLUMN media TEXT;

-- 'confirm': a bare webhook's claim, checked by one poll before it is applied (apiframe).
-- 'mirror': download a completed job's images into JOBHOOK_MEDIA_DIR.
CREATE TABLE due_v2 (
    job_id   TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind     TEXT NOT NULL CHECK (kind IN ('submit', 'poll', 'deadline', 'confirm', 'mirror')),
    provider TEXT NOT NULL,
    due_at   REAL NOT NULL,
    attempt  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, kind)
) WITHOUT ROWID;
INSERT INTO due_v2 (job_id, kind, provider, due_at, attempt) SELECT job_id, kind, provider, due_at, attempt FROM due;
DROP TABLE due;
ALTER TABLE due_v2 RENAME TO due;
CREATE INDEX due_at ON due (due_at);
CREATE INDEX due_provider_at ON due (provider, due_at);
