-- A job's attempts, one per provider tried, oldest first (SPEC §8; as SQLite's schema 9), and what the
-- job still may try: `candidates` (JSON, in order: [{"provider", "callbacks"}]) and its `max_price_usd`.
-- `state` is NULL while the attempt is in flight or not yet made.
CREATE TABLE attempts (
    job_id           TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq              INTEGER NOT NULL,
    provider         TEXT NOT NULL,
    provider_task_id TEXT,
    state            TEXT CHECK (state IN ('not_sent', 'rejected', 'accepted', 'uncertain', 'completed', 'failed')),
    error            TEXT,
    cost_usd         DOUBLE PRECISION,
    started_at       DOUBLE PRECISION NOT NULL,
    ended_at         DOUBLE PRECISION,
    PRIMARY KEY (job_id, seq)
);
ALTER TABLE jobs ADD COLUMN candidates TEXT;
ALTER TABLE jobs ADD COLUMN max_price_usd DOUBLE PRECISION;

-- A failover moves a job to another provider: its counts move with it, and a job whose task failed
-- (submitted or processing) goes back to queued at the next provider. Nothing else moves backwards.
DROP TRIGGER jobs_count_update ON jobs;
CREATE TRIGGER jobs_count_update AFTER UPDATE OF status, provider ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.provider IS DISTINCT FROM NEW.provider)
    EXECUTE FUNCTION jobhook_count_jobs();

CREATE OR REPLACE FUNCTION jobhook_status_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('completed', 'failed')
       OR (jobhook_status_rank(NEW.status) < jobhook_status_rank(OLD.status)
           AND NOT (NEW.status = 'queued' AND OLD.status IN ('submitted', 'processing')
                    AND NEW.provider IS DISTINCT FROM OLD.provider)) THEN
        RAISE EXCEPTION 'jobhook: a job status never moves backwards' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
