-- Each provider's newest finished attempts are read by an index (its latency and success rate over its
-- last 100 jobs, SPEC §8), never by scanning every attempt ever made.
CREATE INDEX attempts_finished ON attempts (provider, ended_at) WHERE state IN ('completed', 'failed');
