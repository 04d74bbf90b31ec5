-- jobhook schema 12: plain callbacks written in batches, one transaction and one WAL flush for many
-- (service/store/postgres.py's CallbackBatches; issue 17).
--
-- Measured on the bench's machine (bench/README.md): of what one callback cost PostgreSQL in a
-- transaction of its own, about a third was the transaction — the statement's start, the answer's
-- send, the COMMIT and its WAL flush — not the rows. A replica now sends the plain callbacks that
-- arrive while its earlier batches are being written as one call of `jobhook_callbacks`, which writes
-- each with `jobhook_callback` in one transaction, and answers each callback once that transaction is
-- committed; a callback that meets no batch in flight is a batch of one, written at once.
--
-- Many callbacks in one transaction means that one of them can no longer undo its own writes by
-- raising: that rolls back the whole batch (and the replica then writes each of its callbacks by the
-- general transaction: correct, and slower). So `jobhook_callback` raises now only where it cannot
-- happen in practice, and a repeat that loses the last place under its job's bound to another copy —
-- which a retry storm spread over replicas does meet — takes its two counts back by writing them
-- again instead (one statement more, and only then). Written the other way round — each lock taken
-- before deciding — the common case cost a third more of the server's CPU (a row lock is a write).
-- Batches lock their jobs in the order of their ids (the replica sorts them), so that two batches
-- never wait for each other in a circle.
CREATE OR REPLACE FUNCTION jobhook_callback(
    p_job_id            TEXT,
    p_event_key         TEXT,
    p_now               DOUBLE PRECISION,
    p_duplicate         TEXT,
    p_bound             INTEGER,
    p_version           BIGINT,
    p_provider          TEXT,
    p_status            TEXT,
    p_set_images        BOOLEAN,
    p_images            TEXT,
    p_set_error         BOOLEAN,
    p_error             TEXT,
    p_set_cost          BOOLEAN,
    p_cost              DOUBLE PRECISION,
    p_resolved_by       TEXT,
    p_attempt_seq       INTEGER,
    p_attempt_state     TEXT,
    p_attempt_cost      DOUBLE PRECISION,
    p_attempt_error     TEXT,
    p_events            TEXT,
    p_unschedule        TEXT,
    p_notification_id   TEXT,
    p_notification_type TEXT,
    p_payload           TEXT,
    p_destinations      TEXT,
    p_mirror_lane       TEXT,
    p_channel           TEXT,
    p_announcement      TEXT
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
        IF NOT FOUND THEN
            -- Recorded meanwhile by a write that left the job as it was (its version unchanged: never the
            -- case for a delivery the status machine applies, planned from that same version). Ours cannot
            -- be undone without undoing the batch's: the batch rolls back, and its callbacks are written
            -- one by one by the general transaction.
            RAISE EXCEPTION 'jobhook: the delivery was recorded meanwhile'
                USING ERRCODE = 'serialization_failure';
        END IF;
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
        -- Another delivery took the last place under the bound meanwhile: take both counts back (the
        -- rows are locked by us since we wrote them). The general transaction then counts it on the
        -- summary event, and sets the receipt's last_at again.
        UPDATE job_event_bounds SET noise = noise - 1 WHERE job_id = p_job_id;
        UPDATE callback_receipts SET count = count - 1 WHERE job_id = p_job_id AND event_key = p_event_key;
        RETURN 'bounded';
    END IF;
    INSERT INTO job_events (job_id, at, type, outcome, detail)
        VALUES (p_job_id, p_now, 'callback', 'duplicate', p_duplicate);
    RETURN 'duplicate';
END
$$;

-- Several callbacks, each the 28 parameters of `jobhook_callback` as a JSON array, written in this
-- order in one transaction (the statement's own); their outcomes, in the same order.
CREATE FUNCTION jobhook_callbacks(p_calls TEXT) RETURNS TEXT[] LANGUAGE plpgsql AS $$
DECLARE
    c JSONB;
    outcomes TEXT[] := '{}';
BEGIN
    FOR c IN SELECT e.call FROM jsonb_array_elements(p_calls::jsonb) WITH ORDINALITY AS e (call, n) ORDER BY e.n LOOP
        outcomes := outcomes || jobhook_callback(
            c ->> 0, c ->> 1, (c ->> 2)::DOUBLE PRECISION, c ->> 3, (c ->> 4)::INTEGER, (c ->> 5)::BIGINT,
            c ->> 6, c ->> 7, (c ->> 8)::BOOLEAN, c ->> 9, (c ->> 10)::BOOLEAN, c ->> 11, (c ->> 12)::BOOLEAN,
            (c ->> 13)::DOUBLE PRECISION, c ->> 14, (c ->> 15)::INTEGER, c ->> 16, (c ->> 17)::DOUBLE PRECISION,
            c ->> 18, c ->> 19, c ->> 20, c ->> 21, c ->> 22, c ->> 23, c ->> 24, c ->> 25, c ->> 26, c ->> 27);
    END LOOP;
    RETURN outcomes;
END
$$;
