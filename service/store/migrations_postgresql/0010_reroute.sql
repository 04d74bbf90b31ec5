-- Rerouting (SPEC §8, POST /v1/jobs/{id}/reroute) and late results; as SQLite's schema 13.

-- 'late_poll': ask a provider about an attempt the job no longer follows but which may still deliver
-- (a reroute left it alive, or another attempt completed the job first). One row per job, in the lane
-- of the provider it asks next, like every other kind: the poller never scans the open jobs.
ALTER TABLE due DROP CONSTRAINT due_kind_check;
ALTER TABLE due ADD CONSTRAINT due_kind_check
    CHECK (kind IN ('submit', 'poll', 'deadline', 'confirm', 'mirror', 'late_poll'));

-- A reroute moves a timed-out job to its next provider, queued again there: the one move back from
-- timed_out. As before, a failover or reroute may move a submitted or processing job back to queued at
-- another provider; nothing else moves backwards, and completed and failed never change.
CREATE OR REPLACE FUNCTION jobhook_status_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('completed', 'failed')
       OR (jobhook_status_rank(NEW.status) < jobhook_status_rank(OLD.status)
           AND NOT (NEW.status = 'queued' AND OLD.status IN ('submitted', 'processing', 'timed_out')
                    AND NEW.provider IS DISTINCT FROM OLD.provider)) THEN
        RAISE EXCEPTION 'jobhook: a job status never moves backwards' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
