-- Operations state shared by every instance: the live queue flag, its audit trail, and each
-- worker's progress (results are final only once the queue has drained).

CREATE TABLE ops.queue_mode (
    singleton  boolean     NOT NULL DEFAULT true PRIMARY KEY CHECK (singleton),
    enabled    boolean     NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by text        NOT NULL
);
-- No row means "not yet set": every ingest uses its configured startup default.

CREATE TABLE ops.queue_mode_audit (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    changed_by   text        NOT NULL,
    old_enabled  boolean,
    new_enabled  boolean     NOT NULL
);

-- Set the flag and audit the change in one statement, so no change escapes the audit trail.
CREATE FUNCTION ops.set_queue_mode(p_enabled boolean, p_actor text)
    RETURNS TABLE (old_enabled boolean, new_enabled boolean, changed_at timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v_old boolean;
BEGIN
    IF p_actor IS NULL OR length(trim(p_actor)) = 0 THEN
        RAISE EXCEPTION 'queue mode change needs an actor' USING ERRCODE = '22023';
    END IF;
    SELECT q.enabled INTO v_old FROM ops.queue_mode q WHERE q.singleton FOR UPDATE;
    INSERT INTO ops.queue_mode (singleton, enabled, changed_at, changed_by)
        VALUES (true, p_enabled, now(), p_actor)
        ON CONFLICT (singleton) DO UPDATE
        SET enabled = excluded.enabled, changed_at = excluded.changed_at, changed_by = excluded.changed_by;
    INSERT INTO ops.queue_mode_audit (changed_by, old_enabled, new_enabled) VALUES (p_actor, v_old, p_enabled);
    RETURN QUERY SELECT v_old, p_enabled, now();
END $$;
REVOKE EXECUTE ON FUNCTION ops.set_queue_mode(boolean, text) FROM PUBLIC;

CREATE TABLE ops.worker_progress (
    worker_id     text        NOT NULL PRIMARY KEY,
    heartbeat_at  timestamptz NOT NULL,
    -- Since when this worker has seen no message and holds no uncommitted work; NULL while busy.
    idle_since    timestamptz
);

GRANT USAGE ON SCHEMA ops TO ekklesia_ingest, ekklesia_worker, ekklesia_events;
GRANT SELECT ON ops.queue_mode TO ekklesia_ingest, ekklesia_events;
GRANT SELECT ON ops.queue_mode_audit TO ekklesia_events;
GRANT EXECUTE ON FUNCTION ops.set_queue_mode(boolean, text) TO ekklesia_events;
GRANT SELECT ON ops.worker_progress TO ekklesia_ingest, ekklesia_events;
GRANT SELECT, INSERT, UPDATE, DELETE ON ops.worker_progress TO ekklesia_worker;
