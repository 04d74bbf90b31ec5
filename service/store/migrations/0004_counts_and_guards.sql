-- jobhook schema 4: job counts kept by triggers (metrics without a scan), and the status machine's
-- first rule enforced by the database itself.

CREATE TABLE job_counts (
    provider TEXT NOT NULL,
    status   TEXT NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (provider, status)
) WITHOUT ROWID;
INSERT INTO job_counts (provider, status, n) SELECT provider, status, COUNT(*) FROM jobs GROUP BY provider, status;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (provider, status, n) VALUES (NEW.provider, NEW.status, 1)
        ON CONFLICT (provider, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE provider = OLD.provider AND status = OLD.status;
END;

CREATE TRIGGER jobs_count_update AFTER UPDATE OF status ON jobs WHEN OLD.status != NEW.status BEGIN
    UPDATE job_counts SET n = n - 1 WHERE provider = OLD.provider AND status = OLD.status;
    INSERT INTO job_counts (provider, status, n) VALUES (NEW.provider, NEW.status, 1)
        ON CONFLICT (provider, status) DO UPDATE SET n = n + 1;
END;

-- A status never moves backwards, and a final status (completed, failed) never changes.
CREATE TRIGGER jobs_status_forward BEFORE UPDATE OF status ON jobs
WHEN OLD.status != NEW.status AND (
    OLD.status IN ('completed', 'failed')
    OR (CASE NEW.status WHEN 'queued' THEN 0 WHEN 'submitted' THEN 1 WHEN 'processing' THEN 2
                        WHEN 'timed_out' THEN 3 ELSE 4 END)
     < (CASE OLD.status WHEN 'queued' THEN 0 WHEN 'submitted' THEN 1 WHEN 'processing' THEN 2
                        WHEN 'timed_out' THEN 3 ELSE 4 END)
)
BEGIN
    SELECT RAISE(ABORT, 'jobhook: a job status never moves backwards');
END;
