-- Jobs per (provider, status), in shards: a row per (provider, status, shard), the shard chosen by the
-- writing connection (its backend pid). With one row per (provider, status), every status change of
-- every replica updated the same two rows and held their locks until its COMMIT (and its fsync): all
-- writes that change a status took turns, one at a time across the whole cluster. Now two writes wait
-- for each other only when their connections share a shard. A shard's n may go below zero (a job
-- counted in one shard leaves its status from another); the sum over the shards is the count.
ALTER TABLE job_counts ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE job_counts DROP CONSTRAINT job_counts_pkey;
ALTER TABLE job_counts ADD PRIMARY KEY (provider, status, shard);

CREATE OR REPLACE FUNCTION jobhook_count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    mine SMALLINT := pg_backend_pid() % 64;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO job_counts (provider, status, shard, n) VALUES (OLD.provider, OLD.status, mine, -1)
            ON CONFLICT (provider, status, shard) DO UPDATE SET n = job_counts.n - 1;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO job_counts (provider, status, shard, n) VALUES (NEW.provider, NEW.status, mine, 1)
            ON CONFLICT (provider, status, shard) DO UPDATE SET n = job_counts.n + 1;
    END IF;
    RETURN NULL;
END
$$;
