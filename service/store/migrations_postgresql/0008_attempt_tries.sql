-- How many times each attempt was sent to its provider (as SQLite's schema 11). A job with a candidate
-- left moves on once a 429/5xx has answered its tries there (SPEC §8: "429/5xx past the retries").
ALTER TABLE attempts ADD COLUMN tries INTEGER NOT NULL DEFAULT 0;
