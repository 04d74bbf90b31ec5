-- Daily budgets (SPEC §9; as SQLite's schema 11). Each UTC day's figures per scope ('total', or a
-- provider), in whole micro-dollars: `reserved` (sent, outcome not known yet) and `spent` (kept: the
-- provider may charge). A scope's figures are the sum of its shards: a reservation adds to one shard
-- (by the job), so that replicas sending at once without a cap do not all wait on one row lock; a
-- capped scope's reservation first locks shard 0 and reads the sum. `exhausted_at` (shard 0): when a
-- cap first refused something that day, so that budget.exhausted is sent once per scope per day.
CREATE TABLE budget_days (
    day          TEXT COLLATE "C" NOT NULL,
    scope        TEXT COLLATE "C" NOT NULL,
    shard        INTEGER NOT NULL DEFAULT 0,
    reserved     BIGINT NOT NULL DEFAULT 0,
    spent        BIGINT NOT NULL DEFAULT 0,
    exhausted_at DOUBLE PRECISION,
    PRIMARY KEY (day, scope, shard)
);
-- What each attempt holds of its day's figures: `budget_micros` in `budget_day`'s `budget_shard`, as
-- 'reserved' or 'kept'; NULL: nothing (free, unpriced, backend-submitted, or released).
ALTER TABLE attempts ADD COLUMN budget_micros BIGINT;
ALTER TABLE attempts ADD COLUMN budget_day TEXT;
ALTER TABLE attempts ADD COLUMN budget_shard INTEGER;
ALTER TABLE attempts ADD COLUMN budget_held TEXT CHECK (budget_held IN ('reserved', 'kept'));
