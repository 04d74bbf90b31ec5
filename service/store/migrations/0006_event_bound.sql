-- jobhook schema 6: a job's refused and duplicate deliveries are bounded (service.domain.history).
-- One row per job that had any: how many came, and the event that counts those past the bound, so
-- that a delivery never counts the job's history to know which side of the bound it falls on.
CREATE TABLE job_event_bounds (
    job_id     TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    noise      INTEGER NOT NULL DEFAULT 0,
    summary_id INTEGER
) WITHOUT ROWID;

-- The deliveries already on record count towards the bound (one scan, here, once).
INSERT INTO job_event_bounds (job_id, noise)
    SELECT job_id, COUNT(*) FROM job_events
    WHERE type = 'callback' AND outcome IN ('refused', 'duplicate')
    GROUP BY job_id;
