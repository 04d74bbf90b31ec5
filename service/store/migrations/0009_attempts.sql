-- jobhook schema 9: a job's attempts, one per provider tried, oldest first (SPEC §8), and what the job
-- still may try: `candidates` (JSON, in order: [{"provider", "callbacks"}]) and its `max_price_usd`.
-- `state` is NULL while the attempt is in flight or not yet made.
CREATE TABLE attempts (
    job_id           TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq              INTEGER NOT NULL,
    provider         TEXT NOT NULL,
    provider_task_id TEXT,
    state            TEXT CHECK (state IN ('not_sent', 'rejected', 'accepted', 'uncertain', 'completed', 'failed')),
    error            TEXT,
    cost_usd         REAL,
    started_at       REAL NOT NULL,
    ended_at         REAL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
ALTER TABLE jobs ADD COLUMN candidates TEXT;
ALTER TABLE jobs ADD COLUMN max_price_usd REAL;

-- A failover moves a job to another provider: its counts move with it, and a job whose task failed
-- (submitted or processing) goes back to queued at the next provider. Nothing else moves backwards.
DROP TRIGGER jobs_count_update;
CREATE TRIGGER jobs_count_update AFTER UPDATE OF status, provider ON jobs
WHEN OLD.status != NEW.status OR OLD.provider != NEW.provider BEGIN
    UPDATE job_counts SET n = n - 1 WHERE provider = OLD.provider AND status = OLD.status;
    INSERT INTO job_counts (provider, status, n) VALUES (NEW.provider, NEW.status, 1)
        ON CONFLICT (provider, status) DO UPDATE SET n = n + 1;
END;

DROP TRIGGER jobs_status_forward;
CREATE TRIGGER jobs_status_forward BEFORE UPDATE OF status ON jobs
WHEN OLD.status != NEW.status AND (
    OLD.status IN ('completed', 'failed')
    OR ((CASE NEW.status WHEN 'queued' THEN 0 WHEN 'submitted' THEN 1 WHEN 'processing' THEN 2
                         WHEN 'timed_out' THEN 3 ELSE 4 END)
      < (CASE OLD.status WHEN 'queued' THEN 0 WHEN 'submitted' THEN 1 WHEN 'processing' THEN 2
                         WHEN 'timed_out' THEN 3 ELSE 4 END)
        AND NOT (NEW.status = 'queued' AND OLD.status IN ('submitted', 'processing')
                 AND NEW.provider != OLD.provider))
)
BEGIN
    SELECT RAISE(ABORT, 'jobhook: a job status never moves backwards');
END;
