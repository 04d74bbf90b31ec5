-- jobhook schema 13: rerouting (SPEC §8, POST /v1/jobs/{id}/reroute) and late results.

-- 'late_poll': ask a provider about an attempt the job no longer follows but which may still deliver
-- (a reroute left it alive, or another attempt completed the job first). One row per job, in the lane
-- of the provider it asks next, like every other kind: the poller never scans the open jobs.
CREATE TABLE due_v11 (
    job_id   TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind     TEXT NOT NULL CHECK (kind IN ('submit', 'poll', 'deadline', 'confirm', 'mirror', 'late_poll')),
    provider TEXT NOT NULL,
    due_at   REAL NOT NULL,
    attempt  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, kind)
) WITHOUT ROWID;
INSERT INTO due_v11 (job_id, kind, provider, due_at, attempt) SELECT job_id, kind, provider, due_at, attempt FROM due;
DROP TABLE due;
ALTER TABLE due_v11 RENAME TO due;
CREATE INDEX due_provider_at ON due (provider, due_at);

-- A reroute moves a timed-out job to its next provider, queued again there: the one move back from
-- timed_out. As before, a failover or reroute may move a submitted or processing job back to queued at
-- another provider; nothing else moves backwards, and completed and failed never change.
DROP TRIGGER jobs_status_forward;
CREATE TRIGGER jobs_status_forward BEFORE UPDATE OF status ON jobs
WHEN OLD.status != NEW.status AND (
    OLD.status IN ('completed', 'failed')
    OR ((CASE NEW.status WHEN 'queued' THEN 0 WHEN 'submitted' THEN 1 WHEN 'processing' THEN 2
                         WHEN 'timed_out' THEN 3 ELSE 4 END)
      < (CASE OLD.status WHEN 'queued' THEN 0 WHEN 'submitted' THEN 1 WHEN 'processing' THEN 2
                         WHEN 'timed_out' THEN 3 ELSE 4 END)
        AND NOT (NEW.status = 'queued' AND OLD.status IN ('submitted', 'processing', 'timed_out')
                 AND NEW.provider != OLD.provider))
)
BEGIN
    SELECT RAISE(ABORT, 'jobhook: a job status never moves backwards');
END;
