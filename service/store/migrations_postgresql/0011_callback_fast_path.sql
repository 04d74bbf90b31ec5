-- jobhook schema 8: a callback in one round trip (service/store/pg_callback.py).
--
-- The common callback — the job's current attempt, the job moving forward, unchanged since the
-- route read it — is written by one call of this function, in one statement (autocommit: its own
-- transaction, COMMITted before the call returns). The Python side decides everything (the status
-- machine, the events' details, the notification's payload) from the job as it read it, and passes
-- the rows to write; this function only checks that the job is still as read (its row version,
-- `xmin`, which every write to the row changes) and writes them. A repeat of a recorded event is taken here too, locking its receipt and
-- the job's noise counter, never the job.
--
-- It answers 'accepted' or 'duplicate' when it wrote the delivery, and 'fallback' (or 'bounded', for
-- a job past its bound) when it wrote nothing and the caller must run the general transaction
-- (service.store.common.record_callback):
-- the job changed since it was read, nothing was planned (the status does not simply move forward,
-- a task id is to be bound, an earlier attempt's result…), the provider's callback health is to be
-- reset, or the job's history is past its bound of refused and duplicate deliveries. When a race
-- is found after a write (another copy pushed the noise counter past the bound meanwhile, or was
-- recorded meanwhile), it raises serialization_failure: the statement rolls back, and the caller
-- runs the general transaction.
CREATE FUNCTION jobhook_callback(
    p_job_id            TEXT,
    p_event_key         TEXT,
    p_now               DOUBLE PRECISION,
    p_duplicate         TEXT,              -- a repeat's event detail (JSON)
    p_bound             INTEGER,           -- refused and duplicate deliveries kept one event each
    p_version           BIGINT,            -- the job's row version as read; NULL: only a repeat is taken
    p_provider          TEXT,
    p_status            TEXT,
    p_set_images        BOOLEAN,
    p_images            TEXT,
    p_set_error         BOOLEAN,
    p_error             TEXT,
    p_set_cost          BOOLEAN,
    p_cost              DOUBLE PRECISION,
    p_resolved_by       TEXT,              -- not NULL: the job is final now
    p_attempt_seq       INTEGER,           -- not NULL: the current attempt ends
    p_attempt_state     TEXT,
    p_attempt_cost      DOUBLE PRECISION,
    p_attempt_error     TEXT,
    p_events            TEXT,              -- the job's new events, in order: a JSON array of [type, outcome, detail]
    p_unschedule        TEXT,              -- due kinds to drop, comma-separated
    p_notification_id   TEXT,              -- not NULL: a notification for the destinations below
    p_notification_type TEXT,
    p_payload           TEXT,
    p_destinations      TEXT,              -- comma-separated, in order
    p_mirror_lane       TEXT,              -- not NULL: the job's images are to be mirrored now
    p_channel           TEXT,
    p_announcement      TEXT               -- not NULL: pg_notify'd to the other replicas on COMMIT
) RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    v_noise INTEGER;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM callback_receipts WHERE job_id = p_job_id AND event_key = p_event_key) THEN
        IF p_version IS NULL THEN
            RETURN 'fallback';
        END IF;
        -- A genuine callback ends a run of jobs finished by polling: the general transaction says so.
        IF EXISTS (SELECT 1 FROM provider_state
                   WHERE provider = p_provider AND (polled_in_a_row > 0 OR degraded != 0)) THEN
            RETURN 'fallback';
        END IF;
        -- The job as read, or nothing: changed meanwhile (its version once its lock is ours), the plan
        -- is stale. Its row is locked first, then its receipt, as the general transaction does.
        UPDATE jobs SET
            status      = p_status,
            images      = CASE WHEN p_set_images THEN p_images ELSE images END,
            error       = CASE WHEN p_set_error THEN p_error ELSE error END,
            cost_usd    = CASE WHEN p_set_cost THEN p_cost ELSE cost_usd END,
            finished_at = CASE WHEN p_resolved_by IS NOT NULL THEN p_now ELSE finished_at END,
            resolved_by = COALESCE(p_resolved_by, resolved_by),
            updated_at  = p_now
            WHERE id = p_job_id AND xmin::text::bigint = p_version;
        IF NOT FOUND THEN
            RETURN 'fallback';
        END IF;
        INSERT INTO callback_receipts (job_id, event_key, first_at, last_at)
            VALUES (p_job_id, p_event_key, p_now, p_now)
            ON CONFLICT (job_id, event_key) DO NOTHING;
        IF FOUND THEN
            IF p_attempt_seq IS NOT NULL THEN
                UPDATE attempts SET state = p_attempt_state, cost_usd = p_attempt_cost, error = p_attempt_error,
                                    ended_at = p_now
                    WHERE job_id = p_job_id AND seq = p_attempt_seq;
            END IF;
            INSERT INTO job_events (job_id, at, type, outcome, detail)
                SELECT p_job_id, p_now, e.event ->> 0, e.event ->> 1, e.event ->> 2
                FROM json_array_elements(p_events::json) WITH ORDINALITY AS e (event, n)
                ORDER BY e.n;
            IF p_unschedule IS NOT NULL THEN
                DELETE FROM due WHERE job_id = p_job_id AND kind = ANY (string_to_array(p_unschedule, ','));
            END IF;
            IF p_notification_id IS NOT NULL THEN
                INSERT INTO notifications (id, type, job_id, provider, payload, created_at)
                    VALUES (p_notification_id, p_notification_type, p_job_id, p_provider, p_payload, p_now);
                INSERT INTO outbox (notification_id, destination, status, next_attempt_at, created_at, updated_at)
                    SELECT p_notification_id, d.destination, 'pending', p_now, p_now, p_now
                    FROM unnest(string_to_array(p_destinations, ',')) WITH ORDINALITY AS d (destination, n)
                    ORDER BY d.n;
            END IF;
            IF p_mirror_lane IS NOT NULL THEN
                INSERT INTO due (job_id, kind, provider, due_at, attempt)
                    VALUES (p_job_id, 'mirror', p_mirror_lane, p_now, 0)
                    ON CONFLICT (job_id, kind) DO UPDATE SET due_at = excluded.due_at, attempt = excluded.attempt;
            END IF;
            IF p_announcement IS NOT NULL THEN
                PERFORM pg_notify(p_channel, p_announcement);
            END IF;
            RETURN 'accepted';
        END IF;
        -- Another copy was recorded meanwhile by a write that left the job as it was: undo ours.
        RAISE EXCEPTION 'jobhook: the delivery was recorded meanwhile'
            USING ERRCODE = 'serialization_failure';
    END IF;
    -- A repeat: counted on its receipt and, within the job's bound, an event of its own.
    SELECT noise INTO v_noise FROM job_event_bounds WHERE job_id = p_job_id;
    IF COALESCE(v_noise, 0) >= p_bound THEN
        RETURN 'bounded';  -- past the bound: the general transaction counts it on the summary event
    END IF;
    UPDATE callback_receipts SET count = count + 1, last_at = p_now
        WHERE job_id = p_job_id AND event_key = p_event_key;
    INSERT INTO job_event_bounds (job_id, noise) VALUES (p_job_id, 1)
        ON CONFLICT (job_id) DO UPDATE SET noise = job_event_bounds.noise + 1
        RETURNING noise INTO v_noise;
    IF v_noise > p_bound THEN
        RAISE EXCEPTION 'jobhook: another delivery took the last place under the bound'
            USING ERRCODE = 'serialization_failure';
    END IF;
    INSERT INTO job_events (job_id, at, type, outcome, detail)
        VALUES (p_job_id, p_now, 'callback', 'duplicate', p_duplicate);
    RETURN 'duplicate';
END
$$;
